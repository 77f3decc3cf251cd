/* hostile: a guest that attacks the VMM's devices, then checks that a
 * correct virtio-blk request still works. It writes pseudo-random values
 * to every emulated register (UART, RTC, i8042, ACPI PM/GPE/hotplug,
 * unassigned ports and MMIO, PCI configuration space of all slots at all
 * offsets and widths, virtio common/notify/ISR/device structures, the
 * MSI-X table and PBA) and submits malformed descriptor chains. Writes
 * that would legitimately end the VM (i8042 0xFE/0xD1, 0xcf9, SLP_EN,
 * hotplug eject) are left out: the VMM obeying them is not a crash. */
#include "virtio.h"

#define SECTOR 512
static uint8_t vq_mem[VQ_MEM_SIZE] __attribute__((aligned(4096)));
static uint8_t buf[4 * SECTOR] __attribute__((aligned(4096)));
static uint8_t rbuf[4 * SECTOR] __attribute__((aligned(4096)));
static struct virtio_blk_req_hdr hdr;
static volatile uint8_t status;

static uint64_t rng = 0x9e3779b97f4a7c15UL;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	/* One value in eight is all-zeros or all-ones: the classic edge cases. */
	switch (rng & 15) {
	case 0:
		return 0;
	case 1:
		return ~0UL;
	}
	return rng;
}

static void port_garbage(uint16_t port, int rounds)
{
	for (int i = 0; i < rounds; i++) {
		uint64_t v = rnd();
		outb(port, (uint8_t)v);
		inb(port);
		if (!(port & 1)) {
			outw(port, (uint16_t)v);
			inw(port);
		}
		if (!(port & 3)) {
			outl(port, (uint32_t)v);
			inl(port);
		}
	}
}

static void mmio_garbage(uint64_t base, uint32_t len)
{
	for (uint32_t off = 0; off < len; off++) {
		uint64_t v = rnd();
		mmio_write8(base + off, (uint8_t)v);
		mmio_read8(base + off);
		if (!(off & 1)) {
			mmio_write16(base + off, (uint16_t)v);
			mmio_read16(base + off);
		}
		if (!(off & 3)) {
			mmio_write32(base + off, (uint32_t)v);
			mmio_read32(base + off);
		}
		if (!(off & 7)) {
			mmio_write64(base + off, v);
			mmio_read64(base + off);
		}
	}
}

static void legacy_ports(void)
{
	for (uint16_t p = 0x3f8; p < 0x400; p++)
		port_garbage(p, 8);
	/* Back to a sane UART so the rest of the report is readable. */
	outb(0x3fb, 0x03); /* LCR 8N1, DLAB 0 */
	outb(0x3f9, 0x00); /* IER */
	outb(0x3fc, 0x03); /* MCR: DTR RTS, no loopback */
	printf("\nPHASE uart\n");
	for (int i = 0; i < 64; i++) {
		outb(0x70, (uint8_t)rnd());
		outb(0x71, (uint8_t)rnd());
		inb(0x71);
	}
	for (int i = 0; i < 64; i++) {
		uint8_t cmd = (uint8_t)rnd();
		if (cmd == 0xd1 || cmd >= 0xf0) /* write output port, pulse reset lines */
			cmd = 0x20;
		outb(0x64, cmd);
		outb(0x60, (uint8_t)rnd());
		inb(0x60);
		inb(0x64);
	}
	/* ACPI PM1a_EVT (0x600), PM1a_CNT (0x604, never SLP_EN), PM_TMR (0x608). */
	for (int i = 0; i < 64; i++) {
		uint64_t v = rnd();
		outw(0x600, (uint16_t)v);
		outw(0x602, (uint16_t)(v >> 16));
		outw(0x604, (uint16_t)(v >> 32) & ~(1 << 13));
		outl(0x608, (uint32_t)v);
		inl(0x600);
		inw(0x604);
		inl(0x608);
	}
	outw(0x604, 0);
	for (uint16_t p = 0xafe0; p < 0xafe4; p++)
		port_garbage(p, 16);
	for (uint16_t p = 0xae00; p < 0xae10; p++)
		if (p < 0xae08 || p >= 0xae0c) /* not the eject register */
			port_garbage(p, 16);
	uint16_t holes[][2] = {{0x80, 0x90}, {0x100, 0x200}, {0x400, 0x500}, {0x700, 0x800}, {0x1000, 0x1100}};
	for (unsigned h = 0; h < sizeof(holes) / sizeof(holes[0]); h++)
		for (uint16_t p = holes[h][0]; p < holes[h][1]; p++)
			port_garbage(p, 1);
	/* Unassigned MMIO in the PCI windows. */
	mmio_garbage(0xd0000000UL, 256);
	mmio_garbage(0x100000000UL + 0x20000000UL, 256); /* 64-bit window at 4 GiB */
	printf("PHASE legacy\n");
}

static uint32_t saved[32][64];
static int present[32];

static void pci_config_garbage(void)
{
	for (int d = 0; d < 32; d++) {
		present[d] = (pci_read32(0, d, 0, 0) & 0xffff) != 0xffff;
		if (present[d])
			for (int r = 0; r < 64; r++)
				saved[d][r] = pci_read32(0, d, 0, r * 4);
	}
	for (int d = 0; d < 32; d++)
		for (int fn = 0; fn < 8; fn += 7)
			for (int off = 0; off < 256; off++) {
				uint64_t v = rnd();
				pci_write8(0, d, fn, off, (uint8_t)v);
				pci_read8(0, d, fn, off);
				if (!(off & 1)) {
					pci_write16(0, d, fn, off, (uint16_t)v);
					pci_read16(0, d, fn, off);
				}
				if (!(off & 3)) {
					pci_write32(0, d, fn, off, (uint32_t)(v >> 32));
					pci_read32(0, d, fn, off);
				}
			}
	/* Odd accesses to the mechanism itself: disabled address, port 0xcfa-0xcff widths. */
	outl(0xcf8, 0x7fffffff);
	inl(0xcfc);
	outl(0xcfc, 0xffffffff);
	for (uint16_t p = 0xcfc; p < 0xd00; p++) {
		outl(0xcf8, 0x80000000u | (uint32_t)(rnd() & 0xfffffc));
		outb(p, (uint8_t)rnd());
		inb(p);
	}
	/* Put every device back: BARs and capabilities first, command last. */
	for (int d = 0; d < 32; d++) {
		if (!present[d])
			continue;
		CHECK(pci_read32(0, d, 0, 0) == saved[d][0], "slot %d IDs changed to %x", d, pci_read32(0, d, 0, 0));
		pci_write16(0, d, 0, 4, 0);
		for (int r = 4; r < 64; r++)
			pci_write32(0, d, 0, r * 4, saved[d][r]);
		pci_write16(0, d, 0, 4, (uint16_t)saved[d][1]);
	}
	printf("PHASE pci-config\n");
}

static void virtio_garbage(struct virtio_pci *vp)
{
	mmio_garbage(vp->common, 0x40);
	/* Queue registers for every queue index a guest can select. */
	for (int q = 0; q < 4; q++) {
		mmio_write16(vp->common + VCC_Q_SELECT, (uint16_t)q);
		mmio_write64(vp->common + VCC_Q_DESC, rnd());
		mmio_write64(vp->common + VCC_Q_AVAIL, rnd());
		mmio_write64(vp->common + VCC_Q_USED, rnd());
		mmio_write16(vp->common + VCC_Q_SIZE, (uint16_t)rnd());
		mmio_write16(vp->common + VCC_Q_ENABLE, 1);
		mmio_write8(vp->common + VCC_STATUS, 0x0f);
		mmio_write16(vp->notify + (uint64_t)mmio_read16(vp->common + VCC_Q_NOFF) * vp->notify_mult, (uint16_t)q);
	}
	mmio_garbage(vp->notify, 0x20);
	if (vp->isr)
		mmio_garbage(vp->isr, 4);
	if (vp->device)
		mmio_garbage(vp->device, 0x40);
	int cap = pci_find_cap(vp->dev, 0x11, 0);
	if (cap) {
		uint32_t t = pci_read32(0, vp->dev, 0, cap + 4), p = pci_read32(0, vp->dev, 0, cap + 8);
		int n = (pci_read16(0, vp->dev, 0, cap + 2) & 0x7ff) + 1;
		pci_write16(0, vp->dev, 0, cap + 2, 0x8000); /* enabled, so garbage entries can fire */
		mmio_garbage(pci_bar(vp->dev, t & 7, NULL) + (t & ~7u), 16 * n);
		mmio_garbage(pci_bar(vp->dev, p & 7, NULL) + (p & ~7u), 8);
		mmio_write8(vp->common + VCC_STATUS, 0x0f);
		mmio_write16(vp->notify, 0);
	}
	CHECK(virtio_reset(vp) == 0, "device did not reset after register garbage");
	printf("PHASE virtio-registers\n");
}

/* fresh resets the device and sets up queue 0 for polling. */
static void fresh(struct virtio_pci *vp, struct virtq *vq)
{
	status = 0xff; /* so a report shows what the device wrote, if anything */
	CHECK(virtio_init(vp, 0) == 0, "re-init failed, status %x", virtio_status(vp));
	CHECK(virtq_setup(vp, vq, 0, 16, VIRTIO_NO_VECTOR, vq_mem) == 0, "queue setup failed");
	virtio_driver_ok(vp);
}

static void set_desc(struct virtq *vq, int i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	vq->desc[i].addr = addr;
	vq->desc[i].len = len;
	vq->desc[i].flags = flags;
	vq->desc[i].next = next;
}

static void publish(struct virtq *vq, uint16_t head, uint16_t advance)
{
	vq->avail->ring[vq->avail_idx % vq->size] = head;
	mb();
	vq->avail_idx += advance;
	*(volatile uint16_t *)&vq->avail->idx = vq->avail_idx;
	mb();
	virtq_kick(vq);
}

static void outcome(struct virtio_pci *vp, struct virtq *vq, const char *name)
{
	uint32_t len = 0;
	int id = virtq_poll_ms(vq, &len, 300);
	printf("CHAIN %s used=%d len=%u status=%x device_status=%x\n", name, id, len, status, virtio_status(vp));
	CHECK(virtio_reset(vp) == 0, "device did not reset after chain %s", name);
}

static void malformed_chains(struct virtio_pci *vp, struct virtq *vq)
{
	uint64_t h = (uint64_t)&hdr, st = (uint64_t)&status, b = (uint64_t)buf;
	hdr.type = VIRTIO_BLK_T_IN;
	hdr.sector = 0;

	fresh(vp, vq); /* data buffer outside guest RAM */
	set_desc(vq, 0, h, 16, VRING_DESC_F_NEXT, 1);
	set_desc(vq, 1, 0x7fff00000000UL, 4096, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
	set_desc(vq, 2, st, 1, VRING_DESC_F_WRITE, 0);
	publish(vq, 0, 1);
	outcome(vp, vq, "out-of-ram");

	fresh(vp, vq); /* buffer straddling the end of RAM and the address space */
	set_desc(vq, 0, h, 16, VRING_DESC_F_NEXT, 1);
	set_desc(vq, 1, ~0UL - 100, 4096, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
	set_desc(vq, 2, st, 1, VRING_DESC_F_WRITE, 0);
	publish(vq, 0, 1);
	outcome(vp, vq, "wrapping-address");

	fresh(vp, vq); /* a loop: 0 -> 1 -> 0 */
	set_desc(vq, 0, h, 16, VRING_DESC_F_NEXT, 1);
	set_desc(vq, 1, b, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 0);
	publish(vq, 0, 1);
	outcome(vp, vq, "loop");

	fresh(vp, vq); /* over-long: every descriptor chained, the last back to the first */
	set_desc(vq, 0, h, 16, VRING_DESC_F_NEXT, 1);
	for (int i = 1; i < vq->size; i++)
		set_desc(vq, i, b, 1, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, (uint16_t)((i + 1) % vq->size));
	publish(vq, 0, 1);
	outcome(vp, vq, "over-long");

	fresh(vp, vq); /* next index beyond the queue */
	set_desc(vq, 0, h, 16, VRING_DESC_F_NEXT, 999);
	publish(vq, 0, 1);
	outcome(vp, vq, "next-out-of-range");

	fresh(vp, vq); /* head index beyond the queue */
	publish(vq, 60000, 1);
	outcome(vp, vq, "head-out-of-range");

	fresh(vp, vq); /* avail index far ahead of what was published */
	set_desc(vq, 0, h, 16, VRING_DESC_F_NEXT, 1);
	set_desc(vq, 1, st, 1, VRING_DESC_F_WRITE, 0);
	publish(vq, 0, 5000);
	outcome(vp, vq, "avail-idx-jump");

	fresh(vp, vq); /* header too short, status read-only */
	set_desc(vq, 0, h, 4, VRING_DESC_F_NEXT, 1);
	set_desc(vq, 1, st, 1, 0, 0);
	publish(vq, 0, 1);
	outcome(vp, vq, "short-header");

	fresh(vp, vq); /* indirect descriptor without VIRTIO_F_INDIRECT_DESC, pointing at garbage */
	set_desc(vq, 0, 0xdeadbeef000UL, 0xfffffff0, 4 /* VRING_DESC_F_INDIRECT */, 0);
	publish(vq, 0, 1);
	outcome(vp, vq, "indirect-unnegotiated");

	fresh(vp, vq); /* huge length, write request from a read-only huge buffer */
	hdr.type = VIRTIO_BLK_T_OUT;
	set_desc(vq, 0, h, 16, VRING_DESC_F_NEXT, 1);
	set_desc(vq, 1, b, 0xffffffff, VRING_DESC_F_NEXT, 2);
	set_desc(vq, 2, st, 1, VRING_DESC_F_WRITE, 0);
	publish(vq, 0, 1);
	outcome(vp, vq, "huge-length");

	fresh(vp, vq); /* unknown request type */
	hdr.type = 0x7777;
	set_desc(vq, 0, h, 16, VRING_DESC_F_NEXT, 1);
	set_desc(vq, 1, st, 1, VRING_DESC_F_WRITE, 0);
	status = 0xff;
	publish(vq, 0, 1);
	uint32_t len;
	int id = virtq_poll_ms(vq, &len, 1000);
	printf("CHAIN unknown-type used=%d status=%x\n", id, status);
	CHECK(id == 0 && status == VIRTIO_BLK_S_UNSUPP, "unknown request type: used %d status %x, want UNSUPP", id, status);
	CHECK(virtio_reset(vp) == 0, "reset");
	printf("PHASE chains\n");
}

int main(void)
{
	struct virtio_pci vp;
	struct virtq vq;
	CHECK(virtio_pci_find(&vp, VIRTIO_DEV_BLK, 0) == 0, "no virtio-blk");
	legacy_ports();
	pci_config_garbage();
	CHECK(virtio_pci_find(&vp, VIRTIO_DEV_BLK, 0) == 0, "virtio-blk lost after config garbage");
	virtio_garbage(&vp);
	malformed_chains(&vp, &vq);

	/* The device must still serve a correct request, polled and by MSI-X. */
	fresh(&vp, &vq);
	for (int i = 0; i < (int)sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 29 + 3);
	CHECK(virtio_blk_rw(&vq, VIRTIO_BLK_T_OUT, 100, buf, sizeof(buf), 0) == VIRTIO_BLK_S_OK, "final write failed");
	CHECK(virtio_blk_rw(&vq, VIRTIO_BLK_T_IN, 100, rbuf, sizeof(rbuf), 0) == VIRTIO_BLK_S_OK, "final read failed");
	CHECK(memcmp(buf, rbuf, sizeof(buf)) == 0, "final read-back differs");
	CHECK(virtio_reset(&vp) == 0, "reset");
	lapic_enable();
	CHECK(msix_enable(vp.dev) == 0 && msix_set_vector(vp.dev, 0, 0x32) == 0, "MSI-X setup failed");
	CHECK(virtio_init(&vp, 0) == 0, "init");
	CHECK(virtq_setup(&vp, &vq, 0, 16, 0, vq_mem) == 0, "queue setup with MSI-X");
	virtio_driver_ok(&vp);
	memset(rbuf, 0, sizeof(rbuf));
	CHECK(virtio_blk_rw(&vq, VIRTIO_BLK_T_IN, 100, rbuf, sizeof(rbuf), 0x32) == VIRTIO_BLK_S_OK, "MSI-X read failed");
	CHECK(memcmp(buf, rbuf, sizeof(buf)) == 0, "MSI-X read-back differs");
	printf("FINAL request ok\n");
	return 0;
}
