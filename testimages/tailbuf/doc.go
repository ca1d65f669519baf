// Package tailbuf keeps the end of a stream: Buffer is an io.Writer, safe for concurrent use,
// that holds only the last Max bytes written to it. The VM runners (qemuboot, uefivm) keep
// a serial console or a child's stderr in one, so that output is bounded however long a
// guest talks, and the part an error report needs (the end) is still there.
package tailbuf
