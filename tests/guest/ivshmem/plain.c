/* plain: an ivshmem-plain device from `petrel run -object ... -device
 * ivshmem-plain`: no MSI-X, IVPosition -1, BAR2 is the host's object (the
 * host's magic word is there); the guest writes a pattern the host checks. */
#include "guest.h"

int main(void)
{
	int dev = pci_find(0x1af4, 0x1110, 0);
	CHECK(dev >= 0, "no ivshmem device");
	CHECK(pci_find_cap(dev, 0x11, 0) == 0, "ivshmem-plain has an MSI-X capability");
	CHECK((pci_read32(0, dev, 0, 0x08) >> 8) == 0x050000, "class is not RAM controller");
	pci_enable(dev);
	uint64_t bar0 = pci_bar(dev, 0, NULL), bar2 = pci_bar(dev, 2, NULL);
	CHECK(mmio_read32(bar0 + 8) == 0xffffffff, "IVPosition of a plain device is not -1");
	CHECK(mmio_read32(bar2) == 0x49565348, "host magic missing from BAR2");
	for (int i = 0; i < 1024; i++)
		mmio_write32(bar2 + 0x2000 + 4 * i, 0x5a5a0000u + i);
	printf("PLAIN slot=%d bar2=%lx\n", dev, bar2);
	return 0;
}
