package net

import (
	"encoding/binary"
	"errors"

	"github.com/petrel-vmm/petrel/netdev"
)

// struct virtio_net_hdr (5.1.6): flags u8, gso_type u8, hdr_len le16,
// gso_size le16, csum_start le16, csum_offset le16, num_buffers le16.
const (
	hdrLen = netdev.VnetHdrLen

	// NEEDS_CSUM: the checksum at CsumStart+CsumOffset is partial and
	// must be completed; DATA_VALID (receive only): the checksum has been
	// verified, the guest need not check it.
	HdrFNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	HdrFDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID

	GSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   = 3    // VIRTIO_NET_HDR_GSO_UDP
	GSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	GSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN
)

// Hdr is a decoded virtio_net_hdr. Flags holds HdrF*; GSOType one of the
// GSO* values, possibly with GSOECN; HdrLen is the length of the headers
// (Ethernet through TCP/UDP) of a GSO frame, a hint; GSOSize the payload
// bytes per segment; CsumStart and CsumOffset, with NEEDS_CSUM, where
// checksumming starts and where, counted from CsumStart, the result goes
// (both from the start of the frame, after the virtio header);
// NumBuffers how many receive buffers a merged frame spans (1 without
// VIRTIO_NET_F_MRG_RXBUF, which 1.x headers still carry).
type Hdr struct {
	Flags, GSOType                         uint8
	HdrLen, GSOSize, CsumStart, CsumOffset uint16
	NumBuffers                             uint16
}

// DecodeHdr decodes the 12-byte header.
func DecodeHdr(b []byte) Hdr {
	le := binary.LittleEndian
	return Hdr{Flags: b[0], GSOType: b[1], HdrLen: le.Uint16(b[2:]), GSOSize: le.Uint16(b[4:]),
		CsumStart: le.Uint16(b[6:]), CsumOffset: le.Uint16(b[8:]), NumBuffers: le.Uint16(b[10:])}
}

// Encode stores h in b[:12].
func (h Hdr) Encode(b []byte) {
	le := binary.LittleEndian
	b[0], b[1] = h.Flags, h.GSOType
	le.PutUint16(b[2:], h.HdrLen)
	le.PutUint16(b[4:], h.GSOSize)
	le.PutUint16(b[6:], h.CsumStart)
	le.PutUint16(b[8:], h.CsumOffset)
	le.PutUint16(b[10:], h.NumBuffers)
}

// Transmit header errors (sentinels: a bad frame costs no allocation).
var (
	ErrCsumNotNegotiated = errors.New("virtio-net: NEEDS_CSUM without VIRTIO_NET_F_CSUM")
	ErrCsumRange         = errors.New("virtio-net: checksum start and offset beyond the frame")
	ErrGSONotNegotiated  = errors.New("virtio-net: segmentation type not negotiated")
	ErrGSOType           = errors.New("virtio-net: unknown segmentation type")
	ErrGSOSize           = errors.New("virtio-net: segmentation without a segment size or checksum offload")
	ErrFlags             = errors.New("virtio-net: unknown header flags")
	ErrFrameSize         = errors.New("virtio-net: frame shorter than an Ethernet header or longer than allowed")
)

// CheckTx validates the header of a frame of frameLen bytes (header not
// included) the driver transmits under the negotiated features, as the
// device requirements of 5.1.6.2.2 allow: anything a backend could
// misread is refused. A frame without segmentation may be longer than
// Ethernet's only under VIRTIO_NET_F_MTU, where the caller bounds it by
// the offered MTU.
func CheckTx(h Hdr, frameLen int, features uint64) error {
	if frameLen < ethMin || frameLen > maxGSOFrame {
		return ErrFrameSize
	}
	if h.Flags&^(HdrFNeedsCsum|HdrFDataValid) != 0 {
		return ErrFlags
	}
	if h.Flags&HdrFNeedsCsum != 0 {
		if features&FeatureCsum == 0 {
			return ErrCsumNotNegotiated
		}
		if int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen {
			return ErrCsumRange
		}
	}
	gso := h.GSOType &^ GSOECN
	if gso == GSONone {
		if h.GSOType&GSOECN != 0 {
			return ErrGSOType
		}
		if frameLen > ethMax && features&FeatureMTU == 0 {
			return ErrFrameSize
		}
		return nil
	}
	need, ok := gsoNeeds(h.GSOType, hostGSO)
	if !ok {
		return ErrGSOType
	}
	if features&need != need {
		return ErrGSONotNegotiated
	}
	if h.GSOSize == 0 || h.Flags&HdrFNeedsCsum == 0 {
		return ErrGSOSize
	}
	return nil
}

// rxHdrFix makes a header from the backend acceptable to the driver under
// the negotiated features: offload bits it did not ask for are refused
// (reported false), DATA_VALID is kept only with GUEST_CSUM.
func rxHdrFix(h *Hdr, features uint64) bool {
	if features&FeatureGuestCsum == 0 {
		if h.Flags&HdrFNeedsCsum != 0 {
			return false
		}
		h.Flags = 0
	}
	if h.GSOType == GSONone {
		return true
	}
	need, ok := gsoNeeds(h.GSOType, guestGSO)
	return ok && features&need == need
}

// The features behind each segmentation type: TCPv4, TCPv6, UDP, ECN.
var (
	hostGSO  = [4]uint64{FeatureHostTSO4, FeatureHostTSO6, FeatureHostUFO, FeatureHostECN}
	guestGSO = [4]uint64{FeatureGuestTSO4, FeatureGuestTSO6, FeatureGuestUFO, FeatureGuestECN}
)

// gsoNeeds returns the features a segmentation type (not GSONone) needs
// in one direction, or false for an unknown type.
func gsoNeeds(gsoType uint8, feats [4]uint64) (uint64, bool) {
	var need uint64
	switch gsoType &^ GSOECN {
	case GSOTCPv4:
		need = feats[0]
	case GSOTCPv6:
		need = feats[1]
	case GSOUDP:
		need = feats[2]
	default:
		return 0, false
	}
	if gsoType&GSOECN != 0 {
		need |= feats[3]
	}
	return need, true
}
