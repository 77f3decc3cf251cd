package user

import "os"

func fdFile(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }
