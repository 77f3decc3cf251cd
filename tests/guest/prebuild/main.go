// Command prebuild builds every whole-VM test guest into one directory for
// test binaries that run where there is no gcc or binutils (the nested KVM
// guest of scripts/test-kvm.sh): run them with PETREL_GUEST_DIR=DIR.
//
//	go run ./tests/guest/prebuild DIR
package main

import (
	"fmt"
	"os"

	"github.com/petrel-vmm/petrel/tests/guest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: prebuild DIR")
		os.Exit(2)
	}
	n, err := guest.Prebuild(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "prebuild:", err)
		os.Exit(1)
	}
	fmt.Printf("prebuild: %d guests in %s\n", n, os.Args[1])
}
