// Package all links every image format engine (and the NBD protocol) into a program:
// import _ "github.com/petrel-vmm/petrel/block/all".
package all

import (
	_ "github.com/petrel-vmm/petrel/block/luks"
	_ "github.com/petrel-vmm/petrel/block/nbd"
	_ "github.com/petrel-vmm/petrel/block/qcow2"
	_ "github.com/petrel-vmm/petrel/block/qed"
	_ "github.com/petrel-vmm/petrel/block/raw"
)
