/* saved_guest: a guest whose whole state must survive a savevm, a kill and a
 * loadvm in a new process (tests/savevm_test.go).
 *
 * Phase A ticks until the host sends 'g' on COM1. Each tick counts
 * TICK_LEN in a register (%r15-style: a value kept in a register across
 * an asm loop the save may interrupt), then checks that register against
 * the count kept in RAM, writes the tick number into a disk sector over
 * virtio-blk (completion by MSI-X vector 0x5a; the request may be in
 * flight at the save, and after a load its interrupt must still come), and
 * re-reads a fingerprint of device registers (UART, CMOS, the virtio
 * function's config space and common configuration, the LAPIC's TPR)
 * that must never change. It prints "TICK n count=c".
 *
 * Before phase A the guest leaves an interrupt pending: with the LAPIC's
 * TPR at 0x40 a self-IPI on vector 0x45 stays in the IRR (the virtio
 * vector, in a higher priority class, still arrives). Phase B lowers
 * the TPR: the interrupt must arrive exactly once. Then every sector
 * written must read back as the guest remembers it (after a loadvm the
 * disk is the snapshot's: writes made after the save are gone), and the
 * guest powers off with RESULT PASS. */
#include "virtio.h"

#define SECTOR 512
static uint64_t TICK_LEN; /* ticklen= on the command line */
#define SECTORS 64
#define PENDING_VECTOR 0x45
#define QUEUE_VECTOR 0x5a
#define LAPIC_ICR_LO (LAPIC_BASE + 0x300)
#define LAPIC_ICR_HI (LAPIC_BASE + 0x310)

static uint8_t vq_mem[VQ_MEM_SIZE] __attribute__((aligned(4096)));
static uint8_t buf[SECTOR] __attribute__((aligned(4096)));
static volatile uint64_t mem_count;
static uint64_t written[SECTORS]; /* tick last written to each sector + 1 */

static struct virtio_pci vp;
static struct virtq vq;

/* fingerprint folds device registers the guest can read into one value. */
static uint64_t fingerprint(void)
{
	uint64_t h = 1469598103934665603UL;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211UL)
	MIX(inb(COM1_BASE + 3)); /* LCR */
	MIX(inb(COM1_BASE + 1)); /* IER */
	MIX(inb(COM1_BASE + 4)); /* MCR */
	MIX(inb(COM1_BASE + 7)); /* SCR */
	for (int r = 0x30; r < 0x40; r++) {
		outb(0x70, r);
		MIX(inb(0x71));
	}
	/* Config space, but the status register's interrupt bit, which
	 * follows the device's INTx line. */
	for (int off = 0; off < 64; off += 4)
		MIX(pci_read32(0, vp.dev, 0, off) & (off == 4 ? 0xfff7ffff : 0xffffffff));
	MIX(mmio_read8(vp.common + 20));  /* device_status */
	mmio_write16(vp.common + 22, 0);  /* queue_select = 0 */
	MIX(mmio_read16(vp.common + 24)); /* queue_size */
	MIX(mmio_read16(vp.common + 26)); /* queue_msix_vector */
	MIX(mmio_read16(vp.common + 28)); /* queue_enable */
	MIX(mmio_read64(vp.common + 32)); /* queue_desc */
	MIX(mmio_read64(vp.common + 40)); /* queue_driver */
	MIX(mmio_read64(vp.common + 48)); /* queue_device */
	MIX(mmio_read32(LAPIC_TPR));
	return h;
}

static void fill(uint64_t tick)
{
	for (int i = 0; i < SECTOR; i++)
		buf[i] = (uint8_t)(tick * 7 + i);
	*(uint64_t *)buf = tick;
}

int main(void)
{
	TICK_LEN = guest_arg_u64("ticklen", 1UL << 20);
	CHECK(virtio_pci_find(&vp, VIRTIO_DEV_BLK, 0) == 0, "no virtio-blk");
	lapic_enable();
	CHECK(msix_enable(vp.dev) == 0, "MSI-X enable failed");
	CHECK(msix_set_vector(vp.dev, 0, QUEUE_VECTOR) == 0, "MSI-X entry 0 not programmable");
	CHECK(virtio_init(&vp, 0) == 0, "feature negotiation failed");
	CHECK(virtq_setup(&vp, &vq, 0, 64, 0, vq_mem) == 0, "queue setup failed");
	virtio_driver_ok(&vp);
	outb(COM1_BASE + 7, 0x5a); /* scratch register */
	outb(0x70, 0x38);
	outb(0x71, 0xa7); /* a CMOS byte of our own */

	mmio_write32(LAPIC_TPR, 0x40);
	mmio_write32(LAPIC_ICR_HI, 0);
	mmio_write32(LAPIC_ICR_LO, 0x40000 | PENDING_VECTOR); /* fixed, self */
	for (int i = 0; i < 1000; i++)
		cpu_relax();
	CHECK(irq_count[PENDING_VECTOR] == 0, "vector %x arrived through TPR 0x40", PENDING_VECTOR);

	uint64_t fp = fingerprint();
	printf("READY fingerprint=%lx\n", fp);
	uint64_t count = 0;
	for (uint64_t tick = 1;; tick++) {
		uint64_t n = TICK_LEN;
		__asm__ volatile("1: inc %0\n\tdec %1\n\tjnz 1b" : "+r"(count), "+r"(n));
		CHECK(count == mem_count + TICK_LEN, "tick %lu: register count %lu, RAM count %lu", tick, count, mem_count);
		mem_count = count;

		fill(tick);
		int sector = (int)(tick % SECTORS);
		int st = virtio_blk_rw(&vq, VIRTIO_BLK_T_OUT, sector, buf, SECTOR, QUEUE_VECTOR);
		CHECK(st == VIRTIO_BLK_S_OK, "tick %lu: write status %d", tick, st);
		written[sector] = tick + 1;
		uint64_t now = fingerprint();
		CHECK(now == fp, "tick %lu: device registers changed (fingerprint %lx, was %lx)", tick, now, fp);
		printf("TICK %lu count=%lu\n", tick, count);
		if ((inb(COM1_BASE + 5) & 1) && inb(COM1_BASE) == 'g')
			break;
	}

	mmio_write32(LAPIC_TPR, 0);
	for (int i = 0; i < 100000 && irq_count[PENDING_VECTOR] == 0; i++)
		cpu_relax();
	CHECK(irq_count[PENDING_VECTOR] == 1, "pending vector %x arrived %u times, want 1", PENDING_VECTOR, irq_count[PENDING_VECTOR]);
	printf("PENDING-IRQ-OK\n");
	static uint8_t rbuf[SECTOR] __attribute__((aligned(4096)));
	for (int s = 0; s < SECTORS; s++) {
		if (!written[s])
			continue;
		CHECK(virtio_blk_rw(&vq, VIRTIO_BLK_T_IN, s, rbuf, SECTOR, QUEUE_VECTOR) == VIRTIO_BLK_S_OK, "read of sector %d", s);
		fill(written[s] - 1);
		CHECK(memcmp(buf, rbuf, SECTOR) == 0, "sector %d holds tick %lu, the guest wrote tick %lu", s, *(uint64_t *)rbuf, written[s] - 1);
	}
	printf("DISK-OK\n");
	return 0;
}
