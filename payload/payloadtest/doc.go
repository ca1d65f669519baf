// Package payloadtest helps tests of other packages make signing keys, trust roots and signed
// twinslot payloads (from a real image file or from synthetic bytes) in a few lines:
//
//	k := payloadtest.NewKey(t, payload.KeyECDSAP256)
//	trust := payloadtest.TrustRoot(t, 1, 0, k)
//	m := payloadtest.BuildFile(t, "usr.img", filepath.Join(dir, "p.tsp"), payloadtest.Options("1.2.3"), k)
//
// Everything fails the test (t.Fatal) on error, so callers need no error handling.
package payloadtest
