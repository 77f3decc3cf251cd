package user

import "os"

// fdFile wraps fd in an *os.File (which then owns it) so that net.FileConn
// can turn the stack's end of the socket pair into a net.Conn.
func fdFile(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }
