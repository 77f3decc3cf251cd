package main

import (
	"os"

	"github.com/petrel-vmm/petrel/internal/imgtool"
)

func init() {
	register("img", "disk image tool (qemu-img compatible: create, info, check, convert, ...)", func(args []string) int {
		return imgtool.Main(args, os.Stdout, os.Stderr)
	})
	personas["qemu-img"] = func(args []string) int {
		return imgtool.MainAs("qemu-img", args, os.Stdout, os.Stderr)
	}
}
