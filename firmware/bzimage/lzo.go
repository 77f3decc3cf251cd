package bzimage

import "fmt"

// decodeLZOP would decode an lzop container of LZO1X blocks
// (CONFIG_KERNEL_LZO). Petrel has no LZO1X decoder: such kernels are
// booted by the 64-bit protocol, whose in-guest decompressor handles them.
func decodeLZOP(data []byte, limit int) ([]byte, error) {
	return nil, fmt.Errorf("%w: lzo (boot it with the 64-bit protocol)", ErrUnsupported)
}
