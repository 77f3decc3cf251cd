/* hostile: random values to every BAR0 offset at every width, reads of
 * every offset, then checks the device still behaves: IVPosition is the
 * ID it had, the mask reads back, and MMIO to BAR2 still works. */
#include "guest.h"

static uint64_t rng = 0x9e3779b97f4a7c15UL;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(void)
{
	int dev = pci_find(0x1af4, 0x1110, 0);
	CHECK(dev >= 0, "no ivshmem device");
	pci_enable(dev);
	uint64_t bar0 = pci_bar(dev, 0, NULL), bar2 = pci_bar(dev, 2, NULL);
	uint32_t id = mmio_read32(bar0 + 8);
	int n = 0;
	for (int round = 0; round < 2; round++) {
		for (uint64_t off = 0; off < 256; off++) {
			uint64_t v = next();
			/* Doorbell values get bit 15 set: a vector no peer has,
			 * so the run rings nobody; every other value goes. */
			if (off + 8 <= 256 && off % 8 == 0) {
				mmio_write64(bar0 + off, v);
				(void)mmio_read64(bar0 + off);
				n += 2;
			}
			if (off + 4 <= 256 && off % 4 == 0) {
				mmio_write32(bar0 + off, (uint32_t)v | (off == 12 ? 0x8000 : 0));
				(void)mmio_read32(bar0 + off);
				n += 2;
			}
			if (off + 2 <= 256 && off % 2 == 0) {
				mmio_write16(bar0 + off, (uint16_t)v);
				(void)mmio_read16(bar0 + off);
				n += 2;
			}
			mmio_write8(bar0 + off, (uint8_t)v);
			(void)mmio_read8(bar0 + off);
			n += 2;
		}
	}
	mmio_write32(bar0 + 0, 0);
	CHECK(mmio_read32(bar0 + 0) == 0, "mask does not read back 0");
	mmio_write32(bar0 + 0, 1);
	CHECK(mmio_read32(bar0 + 0) == 1, "mask does not read back 1");
	CHECK(mmio_read32(bar0 + 8) == id, "IVPosition changed from %u", id);
	mmio_write32(bar2 + 64, 0x12345678);
	CHECK(mmio_read32(bar2 + 64) == 0x12345678, "BAR2 memory lost a write");
	printf("HOSTILE accesses=%d id=%u\n", n, id);
	return 0;
}
