/* unplug: the guest uses an ivshmem-doorbell device (MSI-X on, doorbell
 * rung, BAR2 written), then ejects its slot through the PCI hotplug
 * controller's eject register (0xae08, a bit per slot) as ACPI _EJ0 does.
 * Afterwards the slot is empty and the old BARs decode nothing. */
#include "guest.h"

int main(void)
{
	int dev = pci_find(0x1af4, 0x1110, 0);
	CHECK(dev >= 0, "no ivshmem device");
	pci_enable(dev);
	uint64_t bar0 = pci_bar(dev, 0, NULL), bar2 = pci_bar(dev, 2, NULL);
	uint32_t id = mmio_read32(bar0 + 8);
	CHECK(id != 0xffffffff, "no ID");
	lapic_enable();
	CHECK(msix_set_vector(dev, 0, MSI_VECTOR_FIRST) == 0, "no MSI-X vector 0");
	CHECK(msix_enable(dev) == 0, "cannot enable MSI-X");
	mmio_write32(bar2 + 0x300, 0xfeedf00d);
	mmio_write32(bar0 + 12, id << 16); /* ring ourselves */
	CHECK(wait_irq(MSI_VECTOR_FIRST, 1, 30) == 0, "self doorbell never arrived");
	outl(0xae08, 1u << dev);
	CHECK(pci_read32(0, dev, 0, 0) == 0xffffffff, "slot %d still answers after eject", dev);
	CHECK(mmio_read32(bar0 + 8) == 0xffffffff, "old BAR0 still decodes");
	CHECK(mmio_read32(bar2 + 0x300) == 0xffffffff, "old BAR2 still maps the shared memory");
	printf("UNPLUG slot=%d id=%u\n", dev, id);
	return 0;
}
