package main

import "golang.org/x/sys/unix"

// umask sets the process umask and returns the old one.
func umask(m int) int { return unix.Umask(m) }
