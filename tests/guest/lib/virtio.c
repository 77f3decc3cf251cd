/* virtio.c: modern virtio-pci transport and split virtqueues (virtio.h). */
#include "virtio.h"

/* virtio_pci_cap fields (4.1.4): cap_vndr 0, cap_next 1, cap_len 2,
 * cfg_type 3, bar 4, id 5, offset 8, length 12; notify_off_multiplier 16. */
#define VIRTIO_PCI_CAP_COMMON 1
#define VIRTIO_PCI_CAP_NOTIFY 2
#define VIRTIO_PCI_CAP_ISR 3
#define VIRTIO_PCI_CAP_DEVICE 4

int virtio_pci_find(struct virtio_pci *vp, uint16_t device_id, int index)
{
	memset(vp, 0, sizeof(*vp));
	vp->dev = pci_find(VIRTIO_VENDOR, device_id, index);
	if (vp->dev < 0)
		return -1;
	pci_enable(vp->dev);
	for (int cap = pci_find_cap(vp->dev, 0x09, 0); cap; cap = pci_find_cap(vp->dev, 0x09, cap)) {
		uint8_t type = pci_read8(0, vp->dev, 0, cap + 3);
		uint8_t bar = pci_read8(0, vp->dev, 0, cap + 4);
		uint32_t off = pci_read32(0, vp->dev, 0, cap + 8);
		if (bar > 5)
			continue;
		int io;
		uint64_t base = pci_bar(vp->dev, bar, &io);
		if (io)
			continue;
		switch (type) {
		case VIRTIO_PCI_CAP_COMMON:
			if (!vp->common)
				vp->common = base + off;
			break;
		case VIRTIO_PCI_CAP_NOTIFY:
			if (!vp->notify) {
				vp->notify = base + off;
				vp->notify_mult = pci_read32(0, vp->dev, 0, cap + 16);
			}
			break;
		case VIRTIO_PCI_CAP_ISR:
			if (!vp->isr)
				vp->isr = base + off;
			break;
		case VIRTIO_PCI_CAP_DEVICE:
			if (!vp->device)
				vp->device = base + off;
			break;
		}
	}
	return vp->common && vp->notify ? 0 : -1;
}

uint8_t virtio_status(struct virtio_pci *vp) { return mmio_read8(vp->common + VCC_STATUS); }

int virtio_reset(struct virtio_pci *vp)
{
	mmio_write8(vp->common + VCC_STATUS, 0);
	for (int i = 0; i < 1000000; i++)
		if (virtio_status(vp) == 0)
			return 0;
	return -1;
}

int virtio_init(struct virtio_pci *vp, uint64_t want)
{
	if (virtio_reset(vp))
		return -1;
	mmio_write8(vp->common + VCC_STATUS, VIRTIO_STATUS_ACK);
	mmio_write8(vp->common + VCC_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	mmio_write32(vp->common + VCC_DFSELECT, 0);
	uint64_t offered = mmio_read32(vp->common + VCC_DF);
	mmio_write32(vp->common + VCC_DFSELECT, 1);
	offered |= (uint64_t)mmio_read32(vp->common + VCC_DF) << 32;
	if (!(offered & VIRTIO_F_VERSION_1))
		return -1;
	vp->features = (want | VIRTIO_F_VERSION_1) & offered;
	mmio_write32(vp->common + VCC_GFSELECT, 0);
	mmio_write32(vp->common + VCC_GF, (uint32_t)vp->features);
	mmio_write32(vp->common + VCC_GFSELECT, 1);
	mmio_write32(vp->common + VCC_GF, (uint32_t)(vp->features >> 32));
	mmio_write8(vp->common + VCC_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	return virtio_status(vp) & VIRTIO_STATUS_FEATURES_OK ? 0 : -1;
}

void virtio_driver_ok(struct virtio_pci *vp)
{
	mmio_write8(vp->common + VCC_STATUS, virtio_status(vp) | VIRTIO_STATUS_DRIVER_OK);
}

int virtq_setup(struct virtio_pci *vp, struct virtq *vq, uint16_t index, uint16_t size, uint16_t msix, void *mem)
{
	if ((uint64_t)mem & 0xfff)
		return -1;
	mmio_write16(vp->common + VCC_Q_SELECT, index);
	uint16_t max = mmio_read16(vp->common + VCC_Q_SIZE);
	if (max == 0)
		return -1;
	if (size > max)
		size = max;
	if (size > VQ_MAX)
		size = VQ_MAX;
	memset(mem, 0, VQ_MEM_SIZE);
	vq->vp = vp;
	vq->index = index;
	vq->size = size;
	vq->desc = mem;
	vq->avail = (struct vring_avail *)((uint8_t *)mem + 4096);
	vq->used = (struct vring_used *)((uint8_t *)mem + 8192);
	vq->avail_idx = vq->used_seen = vq->next_free = 0;
	mmio_write16(vp->common + VCC_Q_SIZE, size);
	mmio_write64(vp->common + VCC_Q_DESC, (uint64_t)vq->desc);
	mmio_write64(vp->common + VCC_Q_AVAIL, (uint64_t)vq->avail);
	mmio_write64(vp->common + VCC_Q_USED, (uint64_t)vq->used);
	mmio_write16(vp->common + VCC_Q_MSIX, msix);
	if (mmio_read16(vp->common + VCC_Q_MSIX) != msix)
		return -1; /* the device refused the vector */
	uint16_t noff = mmio_read16(vp->common + VCC_Q_NOFF);
	vq->notify_addr = vp->notify + (uint64_t)noff * vp->notify_mult;
	mmio_write16(vp->common + VCC_Q_ENABLE, 1);
	return mmio_read16(vp->common + VCC_Q_ENABLE) == 1 ? 0 : -1;
}

int virtq_submit(struct virtq *vq, const struct vbuf *bufs, int n)
{
	if (n <= 0 || n > vq->size)
		return -1;
	uint16_t head = vq->next_free;
	for (int i = 0; i < n; i++) {
		uint16_t d = (uint16_t)((head + i) % vq->size);
		vq->desc[d].addr = (uint64_t)bufs[i].addr;
		vq->desc[d].len = bufs[i].len;
		vq->desc[d].flags = (bufs[i].write ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0);
		vq->desc[d].next = (uint16_t)((d + 1) % vq->size);
	}
	vq->next_free = (uint16_t)((head + n) % vq->size);
	vq->avail->ring[vq->avail_idx % vq->size] = head;
	mb(); /* descriptors and ring entry before the index */
	vq->avail_idx++;
	*(volatile uint16_t *)&vq->avail->idx = vq->avail_idx;
	mb();
	return head;
}

void virtq_kick(struct virtq *vq) { mmio_write16(vq->notify_addr, vq->index); }

int virtq_poll(struct virtq *vq, uint32_t *len, int seconds) { return virtq_poll_ms(vq, len, seconds * 1000); }

int virtq_poll_ms(struct virtq *vq, uint32_t *len, int ms)
{
	uint64_t start = rdtsc(), limit = (uint64_t)ms * 3000000UL;
	while (*(volatile uint16_t *)&vq->used->idx == vq->used_seen) {
		if (rdtsc() - start > limit)
			return -1;
		cpu_relax();
	}
	mb();
	struct vring_used_elem e = vq->used->ring[vq->used_seen % vq->size];
	vq->used_seen++;
	if (len)
		*len = e.len;
	return (int)e.id;
}

uint64_t virtio_blk_capacity(struct virtio_pci *vp)
{
	return mmio_read32(vp->device) | (uint64_t)mmio_read32(vp->device + 4) << 32;
}

int virtio_blk_rw(struct virtq *vq, uint32_t type, uint64_t sector, void *buf, uint32_t len, int vector)
{
	static struct virtio_blk_req_hdr hdr;
	static volatile uint8_t status;
	hdr.type = type;
	hdr.reserved = 0;
	hdr.sector = sector;
	status = 0xff;
	struct vbuf b[3] = {
		{&hdr, sizeof(hdr), 0},
		{buf, len, type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID},
		{(void *)&status, 1, 1},
	};
	struct vbuf nodata[2] = {b[0], b[2]};
	uint32_t before = vector ? irq_count[vector] : 0;
	int head = len ? virtq_submit(vq, b, 3) : virtq_submit(vq, nodata, 2);
	if (head < 0)
		return -1;
	virtq_kick(vq);
	if (vector && wait_irq(vector, before + 1, 10))
		return -1;
	uint32_t used_len;
	int id = virtq_poll(vq, &used_len, 10);
	if (id != head)
		return -1;
	return status;
}
