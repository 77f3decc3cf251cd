/* reboot: proves that devices hot-plugged over QMP survive a guest reset
 * (tests/reboot_test.go). Boot 1 finds no disk, says REBOOT-READY and polls
 * bus 0 until the host has hot-plugged a virtio-blk disk and an
 * ivshmem-plain device; it writes a pattern to the disk, records the boot
 * and the slots in ivshmem BAR2 (host memory, which a reset keeps) and
 * resets through port 0xcf9. The reset clears RAM, so boot 2 learns that it
 * is boot 2 from BAR2; it must find both devices at power-on in the same
 * slots, read the pattern back and see the host's word in BAR2. */
#include "virtio.h"

#define IVSHMEM_VENDOR 0x1af4
#define IVSHMEM_DEVICE 0x1110
#define HOST_MAGIC 0x49565348 /* the host's word at BAR2 offset 0 */
#define BOOTS 0x100           /* BAR2: boots so far */
#define BLK_SLOT 0x104        /* BAR2: the disk's slot seen by boot 1 */
#define IV_SLOT 0x108         /* BAR2: the ivshmem slot seen by boot 1 */
#define SECTOR 512
#define FIRST 128 /* first sector written */

static uint8_t vq_mem[VQ_MEM_SIZE] __attribute__((aligned(4096)));
static uint8_t buf[8 * SECTOR] __attribute__((aligned(4096)));
static uint8_t rbuf[8 * SECTOR] __attribute__((aligned(4096)));

/* Byte i of sector s; tests/reboot_test.go recomputes it. */
static uint8_t pattern(uint64_t s, uint32_t i) { return (uint8_t)(s * 13 + i * 7 + 0xa5); }

int main(void)
{
	struct virtio_pci vp;
	int iv = pci_find(IVSHMEM_VENDOR, IVSHMEM_DEVICE, 0);
	int blk = virtio_pci_find(&vp, VIRTIO_DEV_BLK, 0) == 0 ? vp.dev : -1;
	if (iv < 0 && blk < 0) {
		printf("REBOOT-READY\n");
		/* Config-space polling: one port exit per read, no interrupts. */
		while (iv < 0 || blk < 0) {
			cpu_relax();
			iv = pci_find(IVSHMEM_VENDOR, IVSHMEM_DEVICE, 0);
			blk = virtio_pci_find(&vp, VIRTIO_DEV_BLK, 0) == 0 ? vp.dev : -1;
		}
	}
	CHECK(iv > 0 && blk > 0, "devices at power-on: ivshmem %d, virtio-blk %d", iv, blk);
	pci_enable(iv);
	uint64_t bar2 = pci_bar(iv, 2, NULL);
	CHECK(mmio_read32(bar2) == HOST_MAGIC, "host word missing from BAR2 (%x)", mmio_read32(bar2));
	uint32_t boots = mmio_read32(bar2 + BOOTS);
	printf("BOOT %u blk=%d ivshmem=%d\n", boots + 1, blk, iv);

	pci_enable(blk);
	struct virtq vq;
	CHECK(virtio_init(&vp, 0) == 0, "feature negotiation failed (status %x)", virtio_status(&vp));
	CHECK(virtq_setup(&vp, &vq, 0, 64, VIRTIO_NO_VECTOR, vq_mem) == 0, "queue setup failed");
	virtio_driver_ok(&vp);
	for (uint64_t s = 0; s < 8; s++)
		for (uint32_t i = 0; i < SECTOR; i++)
			buf[s * SECTOR + i] = pattern(s + FIRST, i);

	if (boots == 0) {
		int st = virtio_blk_rw(&vq, VIRTIO_BLK_T_OUT, FIRST, buf, sizeof(buf), 0);
		CHECK(st == VIRTIO_BLK_S_OK, "write status %d", st);
		CHECK(virtio_blk_rw(&vq, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, 0) == VIRTIO_BLK_S_OK, "flush failed");
		mmio_write32(bar2 + BLK_SLOT, blk);
		mmio_write32(bar2 + IV_SLOT, iv);
		mmio_write32(bar2 + BOOTS, 1);
		printf("RESETTING\n");
		outb(0xcf9, 0x06); /* RST_CPU | SYS_RST: a hard reset */
		for (;;)
			__asm__ volatile("hlt");
	}
	CHECK(boots == 1, "boot counter %u, want 1", boots);
	CHECK(mmio_read32(bar2 + BLK_SLOT) == (uint32_t)blk && mmio_read32(bar2 + IV_SLOT) == (uint32_t)iv,
	      "slots moved across the reset: blk %d ivshmem %d, were %d %d", blk, iv,
	      mmio_read32(bar2 + BLK_SLOT), mmio_read32(bar2 + IV_SLOT));
	int st = virtio_blk_rw(&vq, VIRTIO_BLK_T_IN, FIRST, rbuf, sizeof(rbuf), 0);
	CHECK(st == VIRTIO_BLK_S_OK, "read status %d", st);
	CHECK(memcmp(buf, rbuf, sizeof(buf)) == 0, "boot 2 reads back other data than boot 1 wrote");
	mmio_write32(bar2 + BOOTS, 2);
	printf("REBOOT-OK\n");
	return 0;
}
