package main

import (
	"os"

	"github.com/petrel-vmm/petrel/internal/imgtool"
)

// init registers `petrel img` and the qemu-img persona. Both run the same
// tool; MainAs makes its messages start with "qemu-img:" as qemu-img's do,
// which the golden outputs of QEMU's qemu-iotests compare byte for byte.
func init() {
	register("img", "disk image tool (qemu-img compatible: create, info, check, convert, ...)", func(args []string) int {
		return imgtool.Main(args, os.Stdout, os.Stderr)
	})
	personas["qemu-img"] = func(args []string) int {
		return imgtool.MainAs("qemu-img", args, os.Stdout, os.Stderr)
	}
}
