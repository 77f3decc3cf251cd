/* virtio_net: a guest virtio-net driver over the modern PCI transport,
 * polling at CPL3, on Petrel's user-mode network. It reads the MAC and
 * the MTU from the device configuration (virtio 1.2, 5.1.4), posts
 * receive buffers, transmits a DHCP DISCOVER (broadcast, built here with
 * its IPv4 header checksum) and waits for the stack's OFFER: the frame's
 * IPv4 header checksum and UDP checksum (when set) must verify, and the
 * offer must be for this client (xid, chaddr). It prints what the offer
 * holds; the host test checks the values. */
#include "virtio.h"

#define VIRTIO_DEV_NET 0x1041 /* 0x1040 + device type 1 */
#define F_MTU (1UL << 3)
#define F_MAC (1UL << 5)
#define NET_HDR 12 /* struct virtio_net_hdr with num_buffers (5.1.6) */
#define RXBUFS 8
#define BUFSZ 2048
#define XID 0x50e7e1ddu

static uint8_t rxq_mem[VQ_MEM_SIZE] __attribute__((aligned(4096)));
static uint8_t txq_mem[VQ_MEM_SIZE] __attribute__((aligned(4096)));
static uint8_t rxbuf[RXBUFS][BUFSZ] __attribute__((aligned(4096)));
static uint8_t txbuf[BUFSZ] __attribute__((aligned(4096)));
static int rxid[RXBUFS]; /* descriptor head of each posted buffer */
static uint8_t mac[6];

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }

/* sum16 is the ones' complement sum (RFC 1071) of n bytes, added to s. */
static uint32_t sum16(uint32_t s, const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i + 1 < n; i += 2)
		s += be16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}
static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* discover builds the DHCP DISCOVER frame after the net header; returns
 * the frame's length. */
static uint32_t discover(uint8_t *f)
{
	memset(f, 0, 14 + 20 + 8 + 300);
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	put16(f + 12, 0x0800);
	uint8_t *ip = f + 14, *udp = ip + 20, *d = udp + 8;
	d[0] = 1, d[1] = 1, d[2] = 6;                        /* BOOTREQUEST, Ethernet */
	d[4] = (uint8_t)(XID >> 24), d[5] = (uint8_t)(XID >> 16), d[6] = (uint8_t)(XID >> 8), d[7] = (uint8_t)XID;
	d[10] = 0x80;                                         /* broadcast: answer to 255.255.255.255 */
	memcpy(d + 28, mac, 6);                               /* chaddr */
	d[236] = 99, d[237] = 130, d[238] = 83, d[239] = 99;  /* magic cookie */
	d[240] = 53, d[241] = 1, d[242] = 1;                  /* DHCPDISCOVER */
	d[243] = 255;
	put16(udp, 68), put16(udp + 2, 67), put16(udp + 4, 8 + 300); /* checksum 0: none (RFC 768) */
	ip[0] = 0x45, ip[8] = 64, ip[9] = 17;
	put16(ip + 2, 20 + 8 + 300);
	memset(ip + 16, 0xff, 4);
	put16(ip + 10, (uint16_t)~fold(sum16(0, ip, 20)));
	return 14 + 20 + 8 + 300;
}

/* offer checks frame f (n bytes) and prints the offer; 1 if it was the
 * OFFER for us, 0 for another frame (which is skipped). */
static int offer(const uint8_t *f, uint32_t n)
{
	if (n < 14 + 20 + 8 + 240 || be16(f + 12) != 0x0800)
		return 0;
	const uint8_t *ip = f + 14;
	uint32_t ihl = (ip[0] & 15) * 4u;
	if ((ip[0] >> 4) != 4 || ip[9] != 17 || ihl < 20 || 14 + ihl + 8 > n)
		return 0;
	const uint8_t *udp = ip + ihl, *d = udp + 8;
	if (be16(udp) != 67 || be16(udp + 2) != 68)
		return 0;
	CHECK(fold(sum16(0, ip, ihl)) == 0xffff, "OFFER's IPv4 header checksum does not verify");
	uint32_t ulen = be16(udp + 4);
	CHECK(ulen >= 8 + 240 && 14 + ihl + ulen <= n, "UDP length %u in a %u-byte frame", ulen, n);
	if (be16(udp + 6) != 0) {
		uint32_t s = sum16(0, ip + 12, 8) + 17 + ulen; /* pseudo header */
		CHECK(fold(sum16(s, udp, ulen)) == 0xffff, "OFFER's UDP checksum does not verify");
	}
	CHECK(d[0] == 2 && be32(d + 4) == XID && memcmp(d + 28, mac, 6) == 0, "a DHCP reply not for this client");
	CHECK(be32(d + 236) == 0x63825363, "no DHCP magic cookie");
	int type = 0, mtu = 0;
	uint32_t router = 0, mask = 0;
	for (uint32_t i = 240; i < ulen - 8 && d[i] != 255;) {
		if (d[i] == 0) {
			i++;
			continue;
		}
		uint8_t code = d[i], len = d[i + 1];
		const uint8_t *v = d + i + 2;
		CHECK(i + 2 + len <= ulen - 8, "DHCP option %u runs past the packet", code);
		if (code == 53 && len == 1)
			type = v[0];
		else if (code == 3 && len >= 4)
			router = be32(v);
		else if (code == 1 && len == 4)
			mask = be32(v);
		else if (code == 26 && len == 2)
			mtu = be16(v);
		i += 2u + len;
	}
	uint32_t y = be32(d + 16);
	printf("OFFER type=%d yiaddr=%u.%u.%u.%u router=%u.%u.%u.%u mask=%x mtu=%d udp-csum=%s\n", type, y >> 24,
	       (y >> 16) & 255, (y >> 8) & 255, y & 255, router >> 24, (router >> 16) & 255, (router >> 8) & 255,
	       router & 255, mask, mtu, be16(udp + 6) ? "checked" : "none");
	CHECK(type == 2, "DHCP message type %d, want OFFER (2)", type);
	return 1;
}

static void post_rx(struct virtq *rq, int k)
{
	struct vbuf b = {rxbuf[k], BUFSZ, 1};
	rxid[k] = virtq_submit(rq, &b, 1);
}

int main(void)
{
	struct virtio_pci vp;
	struct virtq rq, tq;
	CHECK(virtio_pci_find(&vp, VIRTIO_DEV_NET, 0) == 0, "no virtio-net with common and notify structures");
	CHECK(virtio_init(&vp, F_MAC | F_MTU) == 0, "feature negotiation failed (status %x)", virtio_status(&vp));
	CHECK(vp.features & F_MAC, "VIRTIO_NET_F_MAC not offered");
	for (int i = 0; i < 6; i++)
		mac[i] = mmio_read8(vp.device + i);
	int mtu = vp.features & F_MTU ? mmio_read16(vp.device + 10) : 0;
	printf("NET mac=%02x:%02x:%02x:%02x:%02x:%02x mtu=%d\n", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], mtu);
	CHECK(virtq_setup(&vp, &rq, 0, 16, VIRTIO_NO_VECTOR, rxq_mem) == 0, "receive queue setup failed");
	CHECK(virtq_setup(&vp, &tq, 1, 16, VIRTIO_NO_VECTOR, txq_mem) == 0, "transmit queue setup failed");
	virtio_driver_ok(&vp);
	for (int k = 0; k < RXBUFS; k++)
		post_rx(&rq, k);
	virtq_kick(&rq);

	memset(txbuf, 0, NET_HDR);
	struct vbuf t = {txbuf, NET_HDR + discover(txbuf + NET_HDR), 0};
	virtq_submit(&tq, &t, 1);
	virtq_kick(&tq);
	uint32_t len;
	CHECK(virtq_poll(&tq, &len, 10) >= 0, "the DISCOVER never came back from the transmit queue");
	printf("SENT DISCOVER bytes=%u\n", t.len - NET_HDR);

	for (int frames = 0; frames < 32; frames++) {
		int id = virtq_poll(&rq, &len, 20);
		CHECK(id >= 0, "no DHCP OFFER within 20 s (%d other frames)", frames);
		int k = 0;
		while (k < RXBUFS && rxid[k] != id)
			k++;
		CHECK(k < RXBUFS, "used id %d is no posted buffer", id);
		CHECK(len > NET_HDR && len <= BUFSZ, "used length %u", len);
		if (offer(rxbuf[k] + NET_HDR, len - NET_HDR))
			return 0;
		post_rx(&rq, k);
		virtq_kick(&rq);
	}
	fail("32 frames and no DHCP OFFER");
}
