// Package interop holds the qemu-img interoperability matrix: images
// Petrel writes must pass `qemu-img check` and read back identically
// through qemu-img, and images qemu-img writes must read identically in
// Petrel. The tests need qemu-img and qemu-io (Debian package qemu-utils).
package interop
