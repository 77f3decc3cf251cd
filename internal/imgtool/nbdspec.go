package imgtool

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/nbd"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// nbdSpec reads an NBD node from json: or --image-opts options: the nbd
// driver itself (prefix "", format "nbd") or a raw format over an nbd
// file node (prefix "file.", format "raw"). The spec's path is the name
// qemu-img shows for the node (nbd_refresh_filename's), and open
// connects to the server.
func nbdSpec(o *qemuopt.Opts, prefix, format string) (imageSpec, error) {
	s := imageSpec{format: format}
	if format != "nbd" && format != "raw" {
		return s, fmt.Errorf("petrel opens NBD exports as raw only, not as %s", format)
	}
	cfg, err := nbd.FromOptions(func(k string) (string, bool) { return o.Lookup(prefix + k) })
	if err != nil {
		return s, err
	}
	if s.opts.ReadOnly, err = o.Bool("read-only", false); err != nil {
		return s, err
	}
	if err := o.Unused("Block protocol 'nbd' doesn't support the option '%s'"); err != nil {
		return s, err
	}
	s.path = cfg.Filename()
	s.open = func(opts block.Options) (block.Image, error) {
		return nbd.Open(cfg, format, opts)
	}
	return s, nil
}
