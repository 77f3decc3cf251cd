package virtio_test

import (
	"encoding/binary"
	"testing"

	"github.com/petrel-vmm/petrel/devices/virtio"
)

// FuzzTransport sends fuzzed guest accesses (virtio BAR, MSI-X BAR and
// config space, any width and offset, including status changes that start
// and stop queues on garbage rings) to a virtio-blk function, then checks
// that a driver can still reset it, initialise it and complete a request.
func FuzzTransport(f *testing.F) {
	f.Add([]byte{0, 0x14, 0, 0, 0, 0x0f, 0, 0x1c, 0, 0, 0, 1, 1, 0x40, 0, 0, 0, 0xff})
	f.Add([]byte{0, 0x20, 0x03, 0, 0, 0, 0x10, 2, 0x00, 0x03, 0, 0, 0, 1, 0x14, 0, 0, 0, 0x0f})
	f.Add([]byte{3, 0x4c, 0x00, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, ops []byte) {
		dev, d := newDevice(t, virtio.Options{MSI: &msiCount{}}, 2)
		for n := 0; len(ops) >= 7 && n < 64; n++ {
			target, off, width := ops[0]%4, uint64(binary.LittleEndian.Uint16(ops[1:])), 1<<(ops[0]>>2%4)
			val := ops[3:7]
			ops = ops[7:]
			buf := make([]byte, width)
			copy(buf, val)
			switch target {
			case 0:
				dev.Write(0, off%0x4000, buf)
				dev.Read(0, off%0x4000, buf)
			case 1:
				dev.MSIX().Write(0, off%0x1000, buf)
				dev.MSIX().Read(0, off%0x1000, buf)
			case 2:
				dev.Config().Write(int(off%256), buf)
				dev.Config().Read(int(off%256), buf)
			case 3:
				dev.Write(0, uint64(off%0x38), buf) // common configuration
			}
		}
		if err := d.Init(want, 2, 0, true); err != nil {
			t.Fatalf("init after fuzzed accesses: %v", err)
		}
		flush(t, d, 1, true)
	})
}
