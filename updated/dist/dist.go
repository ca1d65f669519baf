package dist

import "embed"

// FS holds updated.service and com.coreos.update1.conf.
//
//go:embed updated.service com.coreos.update1.conf
var FS embed.FS
