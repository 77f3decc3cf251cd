/* pci_enum: scan bus 0 through configuration mechanism 1 and print every
 * function 0's IDs, class, BARs (address and size, found by the standard
 * all-ones sizing with decoding off) and capability list, for the host
 * test to compare with the VMM's own view. Inside, it checks what the
 * platform promises: a host bridge in slot 0, only function 0 anywhere,
 * sane capability lists, BARs restored after sizing. */
#include "guest.h"

static uint64_t bar_size(int dev, int i, int *is64, int *io)
{
	int off = 0x10 + 4 * i;
	uint32_t lo = pci_read32(0, dev, 0, off);
	*io = lo & 1;
	*is64 = !*io && ((lo >> 1) & 3) == 2;
	pci_write32(0, dev, 0, off, 0xffffffff);
	uint32_t szlo = pci_read32(0, dev, 0, off);
	pci_write32(0, dev, 0, off, lo);
	CHECK(pci_read32(0, dev, 0, off) == lo, "slot %d BAR%d not restored", dev, i);
	if (*io) {
		uint32_t m = szlo & ~3u;
		return m ? (uint64_t)(~m + 1) & 0xffff : 0;
	}
	uint64_t mask = szlo & ~0xfu;
	if (*is64) {
		uint32_t hi = pci_read32(0, dev, 0, off + 4);
		pci_write32(0, dev, 0, off + 4, 0xffffffff);
		uint32_t szhi = pci_read32(0, dev, 0, off + 4);
		pci_write32(0, dev, 0, off + 4, hi);
		mask |= (uint64_t)szhi << 32;
		return mask ? ~mask + 1 : 0;
	}
	return mask ? (uint64_t)(uint32_t)(~(uint32_t)mask + 1) : 0;
}

int main(void)
{
	int found = 0, bridge = 0;
	for (int dev = 0; dev < 32; dev++) {
		uint32_t id = pci_read32(0, dev, 0, 0);
		if ((id & 0xffff) == 0xffff) {
			CHECK(id == 0xffffffff, "empty slot %d reads %x", dev, id);
			continue;
		}
		found++;
		uint32_t cls = pci_read32(0, dev, 0, 8);
		printf("DEV slot=%d vendor=%04x device=%04x class=%06x rev=%02x\n",
		       dev, id & 0xffff, id >> 16, cls >> 8, cls & 0xff);
		if (dev == 0 && (cls >> 8) == 0x060000)
			bridge = 1;
		for (int fn = 1; fn < 8; fn++)
			CHECK(pci_read32(0, dev, fn, 0) == 0xffffffff, "slot %d function %d present", dev, fn);
		uint8_t hdr = pci_read8(0, dev, 0, 0x0e);
		if ((hdr & 0x7f) == 0) {
			uint16_t cmd = pci_read16(0, dev, 0, 4);
			pci_write16(0, dev, 0, 4, cmd & ~3); /* no decoding while sizing */
			for (int i = 0; i < 6; i++) {
				int is64, io;
				uint64_t addr = pci_bar(dev, i, NULL);
				uint64_t size = bar_size(dev, i, &is64, &io);
				if (size)
					printf("BAR slot=%d index=%d addr=%lx size=%lx io=%d is64=%d\n",
					       dev, i, addr, size, io, is64);
				if (size && !io)
					CHECK((addr & (size - 1)) == 0, "slot %d BAR%d %lx not aligned to %lx", dev, i, addr, size);
				if (is64)
					i++;
			}
			pci_write16(0, dev, 0, 4, cmd);
			CHECK(pci_read16(0, dev, 0, 4) == cmd, "slot %d command not restored", dev);
		}
		if (pci_read16(0, dev, 0, 6) & 0x10) {
			int off = pci_read8(0, dev, 0, 0x34), n = 0;
			for (; off; off = pci_read8(0, dev, 0, off + 1)) {
				CHECK(off >= 0x40 && (off & 3) == 0, "slot %d capability pointer %x", dev, off);
				CHECK(++n < 48, "slot %d capability list loops", dev);
				uint8_t cid = pci_read8(0, dev, 0, off);
				printf("CAP slot=%d off=%02x id=%02x", dev, off, cid);
				if (cid == 0x09) /* virtio_pci_cap: cfg_type, bar, offset, length */
					printf(" cfg_type=%u bar=%u offset=%x length=%x", pci_read8(0, dev, 0, off + 3),
					       pci_read8(0, dev, 0, off + 4), pci_read32(0, dev, 0, off + 8),
					       pci_read32(0, dev, 0, off + 12));
				if (cid == 0x11)
					printf(" table_size=%u", (pci_read16(0, dev, 0, off + 2) & 0x7ff) + 1);
				printf("\n");
			}
		}
	}
	printf("PCI found=%d\n", found);
	CHECK(bridge, "no host bridge (class 060000) in slot 0");
	return 0;
}
