/*
 * virtio.h: a small modern virtio-pci driver for guest test programs
 * (virtio 1.x, section 4.1 PCI transport, section 2.7 split virtqueues).
 * Queues live in the program's own RAM (identity-mapped, so addresses in
 * descriptors are the pointers themselves).
 */
#ifndef PETREL_VIRTIO_H
#define PETREL_VIRTIO_H

#include "guest.h"

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_DEV_BLK 0x1042 /* 0x1040 + device type 2 */

/* device_status bits (2.1). */
#define VIRTIO_STATUS_ACK 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

#define VIRTIO_F_VERSION_1 (1UL << 32)

/* virtio_pci_common_cfg offsets (4.1.4.3). */
#define VCC_DFSELECT 0
#define VCC_DF 4
#define VCC_GFSELECT 8
#define VCC_GF 12
#define VCC_MSIX_CONFIG 16
#define VCC_NUM_QUEUES 18
#define VCC_STATUS 20
#define VCC_CFG_GEN 21
#define VCC_Q_SELECT 22
#define VCC_Q_SIZE 24
#define VCC_Q_MSIX 26
#define VCC_Q_ENABLE 28
#define VCC_Q_NOFF 30
#define VCC_Q_DESC 32
#define VCC_Q_AVAIL 40
#define VCC_Q_USED 48
#define VIRTIO_NO_VECTOR 0xffff

/* Split virtqueue layout (2.7). */
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};
struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};
struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[];
};

/* A virtio-pci function found on bus 0 and its capability windows. */
struct virtio_pci {
	int dev;
	uint64_t common, notify, isr, device; /* MMIO addresses */
	uint32_t notify_mult;
	uint64_t features; /* negotiated */
};

#define VQ_MAX 256
/* One split virtqueue. mem must be 4 KiB aligned: VQ_MEM_SIZE bytes. */
struct virtq {
	struct virtio_pci *vp;
	uint16_t index, size;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint64_t notify_addr;
	uint16_t avail_idx;  /* next avail index to publish */
	uint16_t used_seen;  /* used entries consumed */
	uint16_t next_free;  /* next descriptor (simple ring allocation) */
};
#define VQ_MEM_SIZE (3 * 4096)

/* A buffer of a request: device-writable when write is set. */
struct vbuf {
	void *addr;
	uint32_t len;
	int write;
};

/* virtio_pci_find reads the vendor capabilities (4.1.4) of the index'th
 * virtio function with that PCI device id on bus 0. 0 on success. */
int virtio_pci_find(struct virtio_pci *vp, uint16_t device_id, int index);
/* virtio_reset writes 0 to device_status and waits for it to read 0. */
int virtio_reset(struct virtio_pci *vp);
/* virtio_init resets, acknowledges, negotiates want & offered (VERSION_1
 * is required) and sets FEATURES_OK; 0 on success. */
int virtio_init(struct virtio_pci *vp, uint64_t want);
/* virtq_setup configures queue index with up to size entries in mem,
 * MSI-X vector msix (VIRTIO_NO_VECTOR for polling) and enables it. */
int virtq_setup(struct virtio_pci *vp, struct virtq *vq, uint16_t index, uint16_t size, uint16_t msix, void *mem);
void virtio_driver_ok(struct virtio_pci *vp);
uint8_t virtio_status(struct virtio_pci *vp);

/* virtq_submit chains n buffers into descriptors, publishes the chain in
 * the avail ring (without notifying) and returns its head id. */
int virtq_submit(struct virtq *vq, const struct vbuf *bufs, int n);
void virtq_kick(struct virtq *vq);
/* virtq_poll waits (bounded, seconds) for the next used entry; returns
 * its id and stores its length, or -1 on timeout. */
int virtq_poll(struct virtq *vq, uint32_t *len, int seconds);
int virtq_poll_ms(struct virtq *vq, uint32_t *len, int ms);

/* virtio-blk (5.2). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
struct virtio_blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};
/* virtio_blk_capacity reads the capacity (512-byte sectors) from device cfg. */
uint64_t virtio_blk_capacity(struct virtio_pci *vp);
/* virtio_blk_rw performs one request (type IN/OUT/FLUSH/GET_ID) of len
 * bytes at sector and waits for it: by polling the used ring when vector
 * is 0, else for irq_count[vector] to grow. Returns the status byte, or
 * -1 on timeout. */
int virtio_blk_rw(struct virtq *vq, uint32_t type, uint64_t sector, void *buf, uint32_t len, int vector);

#endif
