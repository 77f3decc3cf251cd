/* hotplug: answers the ACPI PCI hotplug interface the way the DSDT's
 * \_GPE._E01, _EJ0 and Linux's acpiphp would (spec: acpi_pci_hotplug.txt).
 * It waits for the SCI (GSI 9, edge-routed here so one GPE assertion is one
 * interrupt), reads the GPE0 status and the up register, probes the new
 * slot's config space, drives the hot-plugged virtio-blk disk (writes a
 * pattern, reads it back, flushes), then waits for the removal request,
 * reads the down register and ejects the slot through 0xae08. */
#include "virtio.h"

#define GPE0_STS 0xafe0
#define GPE0_EN 0xafe2
#define GPE_PCI_HOTPLUG 0x02
#define PCI_UP 0xae00
#define PCI_DOWN 0xae04
#define PCI_EJ 0xae08
#define PCI_RMV 0xae0c
#define VEC_SCI (PIN_VECTOR_FIRST + 9)
#define SECTOR 512

static uint8_t vq_mem[VQ_MEM_SIZE] __attribute__((aligned(4096)));
static uint8_t buf[8 * SECTOR] __attribute__((aligned(4096)));
static uint8_t rbuf[8 * SECTOR] __attribute__((aligned(4096)));

/* Byte i of sector s; tests/hotplug_test.go recomputes it. */
static uint8_t pattern(uint64_t s, uint32_t i) { return (uint8_t)(s * 37 + i * 11 + 0x5c); }

static int only_bit(uint32_t v)
{
	for (int i = 0; i < 32; i++)
		if (v == (1u << i))
			return i;
	return -1;
}

/* wait_gpe waits for the n'th SCI and returns the pending-up or -down
 * register after acknowledging GPE bit 1 (write 1 to clear). */
static uint32_t wait_gpe(uint32_t n, uint16_t reg, const char *what)
{
	CHECK(wait_irq(VEC_SCI, n, 60) == 0, "no SCI for the %s event", what);
	uint8_t sts = inb(GPE0_STS);
	CHECK(sts & GPE_PCI_HOTPLUG, "SCI but GPE0 status %x lacks the hotplug bit", sts);
	uint32_t v = inl(reg);
	outb(GPE0_STS, GPE_PCI_HOTPLUG);
	CHECK((inb(GPE0_STS) & GPE_PCI_HOTPLUG) == 0, "GPE status bit did not clear");
	return v;
}

int main(void)
{
	lapic_enable();
	ioapic_route(9, VEC_SCI, 0);
	outb(GPE0_EN, GPE_PCI_HOTPLUG);
	uint32_t rmv = inl(PCI_RMV);
	CHECK(inl(PCI_EJ) == 0, "hotplug feature register %x, want 0", inl(PCI_EJ));
	printf("REMOVABLE %x\n", rmv);
	CHECK(virtio_pci_find(&(struct virtio_pci){0}, VIRTIO_DEV_BLK, 0) != 0, "a virtio-blk disk before any hotplug");
	printf("HOTPLUG-READY\n");

	uint32_t up = wait_gpe(1, PCI_UP, "insertion");
	int slot = only_bit(up);
	CHECK(slot > 0, "up register %x: want exactly one slot", up);
	CHECK(rmv & (1u << slot), "slot %d is not marked removable (%x)", slot, rmv);
	uint32_t id = pci_read32(0, slot, 0, 0);
	printf("UP slot=%d id=%x\n", slot, id);
	CHECK(id == (0x1042u << 16 | 0x1af4), "slot %d config id %x", slot, id);

	struct virtio_pci vp;
	CHECK(virtio_pci_find(&vp, VIRTIO_DEV_BLK, 0) == 0, "virtio-blk in slot %d has no virtio capabilities", slot);
	CHECK(vp.dev == slot, "found virtio-blk at %d, not %d", vp.dev, slot);
	pci_enable(slot);
	struct virtq vq;
	CHECK(virtio_init(&vp, 0) == 0, "feature negotiation failed (status %x)", virtio_status(&vp));
	CHECK(virtq_setup(&vp, &vq, 0, 64, VIRTIO_NO_VECTOR, vq_mem) == 0, "queue setup failed");
	virtio_driver_ok(&vp);
	for (uint64_t s = 0; s < 8; s++)
		for (uint32_t i = 0; i < SECTOR; i++)
			buf[s * SECTOR + i] = pattern(s + 64, i);
	int st = virtio_blk_rw(&vq, VIRTIO_BLK_T_OUT, 64, buf, sizeof(buf), 0);
	CHECK(st == VIRTIO_BLK_S_OK, "write status %d", st);
	st = virtio_blk_rw(&vq, VIRTIO_BLK_T_IN, 64, rbuf, sizeof(rbuf), 0);
	CHECK(st == VIRTIO_BLK_S_OK, "read status %d", st);
	CHECK(memcmp(buf, rbuf, sizeof(buf)) == 0, "read-back differs");
	CHECK(virtio_blk_rw(&vq, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, 0) == VIRTIO_BLK_S_OK, "flush failed");
	printf("HOTPLUG-IO-OK sector=64 count=8\n");

	uint32_t down = wait_gpe(2, PCI_DOWN, "removal");
	printf("DOWN %x\n", down);
	CHECK(down == (1u << slot), "down register %x, want slot %d", down, slot);
	virtio_reset(&vp);
	outl(PCI_EJ, 1u << slot); /* what the slot's _EJ0 writes */
	id = pci_read32(0, slot, 0, 0);
	CHECK(id == 0xffffffff, "slot %d still answers %x after eject", slot, id);
	CHECK((inl(PCI_UP) & (1u << slot)) == 0 && (inl(PCI_DOWN) & (1u << slot)) == 0, "up/down bits not cleared by eject");
	printf("EJECTED slot=%d\n", slot);
	return 0;
}
