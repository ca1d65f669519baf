package dist

import "embed"

// FS holds locksmithd.service.
//
//go:embed locksmithd.service
var FS embed.FS
