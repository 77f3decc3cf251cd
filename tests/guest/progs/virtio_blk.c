/* virtio_blk: a guest virtio-blk driver over the modern PCI transport.
 * Phase 1 polls the used ring at CPL3; phase 2 resets the device and runs
 * with an MSI-X vector delivered through the IDT. It writes a pattern at
 * several offsets (the host test checks them in the image afterwards),
 * reads it back, flushes and reads the serial (GET_ID). Phase 3 turns
 * MSI-X off and takes the legacy INTx pin through the IOAPIC (GSI
 * 16 + slot % 8), deasserted by reading the ISR. */
#include "virtio.h"

#define SECTOR 512
#define VEC_QUEUE 0x31
#define VEC_PIN (PIN_VECTOR_FIRST + 1)

static uint8_t vq_mem[VQ_MEM_SIZE] __attribute__((aligned(4096)));
static uint8_t buf[16 * SECTOR] __attribute__((aligned(4096)));
static uint8_t rbuf[16 * SECTOR] __attribute__((aligned(4096)));

/* The pattern the host test recomputes: byte i of sector s. */
static uint8_t pattern(uint64_t s, uint32_t i) { return (uint8_t)((s * 131 + i * 7 + (i >> 8)) ^ 0xa5); }

static void fill(uint64_t sector, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++)
		for (uint32_t i = 0; i < SECTOR; i++)
			buf[k * SECTOR + i] = pattern(sector + k, i);
}

static void write_and_verify(struct virtq *vq, uint64_t sector, uint32_t n, int vector, const char *mode)
{
	fill(sector, n);
	int st = virtio_blk_rw(vq, VIRTIO_BLK_T_OUT, sector, buf, n * SECTOR, vector);
	CHECK(st == VIRTIO_BLK_S_OK, "%s write of %u sectors at %lu: status %d", mode, n, sector, st);
	memset(rbuf, 0, sizeof(rbuf));
	st = virtio_blk_rw(vq, VIRTIO_BLK_T_IN, sector, rbuf, n * SECTOR, vector);
	CHECK(st == VIRTIO_BLK_S_OK, "%s read of %u sectors at %lu: status %d", mode, n, sector, st);
	CHECK(memcmp(buf, rbuf, n * SECTOR) == 0, "%s read-back of sector %lu differs", mode, sector);
	printf("WROTE sector=%lu count=%u mode=%s\n", sector, n, mode);
}

static void setup(struct virtio_pci *vp, struct virtq *vq, uint16_t msix)
{
	CHECK(virtio_init(vp, 0) == 0, "feature negotiation failed (status %x)", virtio_status(vp));
	CHECK(virtq_setup(vp, vq, 0, 64, msix, vq_mem) == 0, "queue 0 setup with vector %x failed", msix);
	virtio_driver_ok(vp);
	CHECK(virtio_status(vp) == (VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK),
	      "device status %x", virtio_status(vp));
}

int main(void)
{
	struct virtio_pci vp;
	struct virtq vq;
	CHECK(virtio_pci_find(&vp, VIRTIO_DEV_BLK, 0) == 0, "no virtio-blk with common and notify structures");
	printf("virtio-blk slot=%d common=%lx notify=%lx mult=%u device=%lx\n", vp.dev, vp.common, vp.notify, vp.notify_mult, vp.device);

	/* Phase 1: polling. */
	setup(&vp, &vq, VIRTIO_NO_VECTOR);
	uint64_t cap = virtio_blk_capacity(&vp);
	printf("CAPACITY sectors=%lu\n", cap);
	CHECK(cap >= 8192, "capacity %lu sectors is too small for the test", cap);
	write_and_verify(&vq, 0, 1, 0, "poll");
	write_and_verify(&vq, 1, 8, 0, "poll");
	write_and_verify(&vq, 2048, 16, 0, "poll");
	write_and_verify(&vq, cap - 1, 1, 0, "poll");
	/* Past the end: the device must refuse, not grow the disk. */
	int st = virtio_blk_rw(&vq, VIRTIO_BLK_T_OUT, cap, buf, SECTOR, 0);
	CHECK(st == VIRTIO_BLK_S_IOERR, "write past the end: status %d, want IOERR", st);
	CHECK(virtio_blk_rw(&vq, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, 0) == VIRTIO_BLK_S_OK, "flush failed");

	/* Phase 2: MSI-X entry 0 -> VEC_QUEUE, through the IDT. */
	CHECK(virtio_reset(&vp) == 0, "reset did not complete");
	lapic_enable();
	CHECK(msix_enable(vp.dev) == 0, "MSI-X enable failed");
	CHECK(msix_set_vector(vp.dev, 0, VEC_QUEUE) == 0, "MSI-X entry 0 not programmable");
	setup(&vp, &vq, 0);
	uint32_t before = irq_count[VEC_QUEUE];
	write_and_verify(&vq, 4096, 4, VEC_QUEUE, "msix");
	write_and_verify(&vq, 4100, 3, VEC_QUEUE, "msix");
	uint32_t got = irq_count[VEC_QUEUE] - before;
	printf("MSIX vector=%x interrupts=%u\n", VEC_QUEUE, got);
	CHECK(got >= 4, "%u interrupts for 4 requests", got);

	static char id[21];
	st = virtio_blk_rw(&vq, VIRTIO_BLK_T_GET_ID, 0, id, 20, VEC_QUEUE);
	CHECK(st == VIRTIO_BLK_S_OK, "GET_ID status %d", st);
	printf("SERIAL %s\n", id);
	CHECK(virtio_blk_rw(&vq, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, VEC_QUEUE) == VIRTIO_BLK_S_OK, "flush failed");

	/* Phase 3: INTx through the IOAPIC, edge-triggered so that one
	 * assertion is one interrupt; the ISR read lowers the line. */
	CHECK(virtio_reset(&vp) == 0, "reset did not complete");
	int msix = pci_find_cap(vp.dev, 0x11, 0);
	pci_write16(0, vp.dev, 0, msix + 2, pci_read16(0, vp.dev, 0, msix + 2) & ~0x8000);
	pci_write16(0, vp.dev, 0, 4, pci_read16(0, vp.dev, 0, 4) & ~0x400); /* INTx enabled */
	int gsi = 16 + vp.dev % 8;
	ioapic_route(gsi, VEC_PIN, 0);
	setup(&vp, &vq, VIRTIO_NO_VECTOR);
	for (int k = 0; k < 2; k++) {
		uint32_t pins = irq_count[VEC_PIN];
		fill(6000 + k, 1);
		st = virtio_blk_rw(&vq, VIRTIO_BLK_T_OUT, 6000 + k, buf, SECTOR, 0);
		CHECK(st == VIRTIO_BLK_S_OK, "INTx-phase write: status %d", st);
		CHECK(wait_irq(VEC_PIN, pins + 1, 5) == 0, "no INTx interrupt on GSI %d", gsi);
		uint8_t isr = mmio_read8(vp.isr);
		CHECK(isr & 1, "ISR %x: queue interrupt bit clear", isr);
		CHECK((pci_read16(0, vp.dev, 0, 6) & 0x8) == 0, "INTx status still set after the ISR read");
		printf("WROTE sector=%d count=1 mode=intx\n", 6000 + k);
	}
	printf("INTX gsi=%d interrupts=%u\n", gsi, irq_count[VEC_PIN]);
	ioapic_mask(gsi);
	return 0;
}
