// Package luks is LUKS1 as QEMU 7.2 reads and writes it (QEMU's
// crypto/block-luks.c; the LUKS On-Disk Format Specification 1.2.3): the
// header with its eight key slots, key derivation (PBKDF2), the
// anti-forensic splitter, and the AES sector ciphers (XTS, CBC, ECB with
// plain, plain64 or ESSIV IVs) used for the payload, both for qcow2's
// encrypt.format=luks and for the standalone "luks" format engine.
package luks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Magic starts every LUKS header.
const Magic = "LUKS\xba\xbe"

// On-disk constants (LUKS1 spec, "LUKS partition header"): the header is
// 592 bytes; key slot states; QEMU's 4000 stripes and the 4 KiB area the
// header occupies before the first key slot.
const (
	HeaderBytes     = 592
	numSlots        = 8
	slotActive      = 0x00AC71F3
	slotInactive    = 0x0000DEAD
	stripes         = 4000
	keySlotOffset   = 4096 // bytes; QCRYPTO_BLOCK_LUKS_KEY_SLOT_OFFSET
	digestBytes     = 20
	saltBytes       = 32
	maxKeyBytes     = 64 // AES-256-XTS, the largest key this package makes
	headerSectors   = keySlotOffset / SectorSize
	slotRecordBytes = 48
)

// Slot is one key slot: Iterations and Salt derive the slot key from a
// password, KeyOffset (sectors) is where its AF-split, encrypted copy of
// the master key lies, Stripes its number of AF stripes.
type Slot struct {
	Active     bool
	Iterations uint32
	Salt       [saltBytes]byte
	KeyOffset  uint32
	Stripes    uint32
}

// Header is a parsed LUKS1 header. PayloadOffset is in sectors, KeyBytes
// the master key's length.
type Header struct {
	CipherName, CipherMode, HashSpec string
	PayloadOffset                    uint32
	KeyBytes                         uint32
	MKDigest                         [digestBytes]byte
	MKDigestSalt                     [saltBytes]byte
	MKDigestIter                     uint32
	UUID                             string
	Slots                            [numSlots]Slot
}

// cstring reads a NUL-padded field; a field without its NUL is refused
// as QEMU refuses it.
func cstring(b []byte, what string) (string, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", fmt.Errorf("LUKS header %s is not NUL terminated", what)
	}
	return string(b[:i]), nil
}

// Parse decodes and checks a LUKS1 header (the first HeaderBytes of buf)
// as QEMU's qcrypto_block_luks_check_header does: magic and version, slot
// states, and key material that lies after the header, before the payload
// and without two slots overlapping. The cipher spec is decoded too, so a
// header Parse accepts names a cipher NewCipher can build.
func Parse(buf []byte) (*Header, error) {
	if len(buf) < HeaderBytes {
		return nil, errors.New("LUKS header is truncated")
	}
	if string(buf[:6]) != Magic {
		return nil, errors.New("Volume is not in LUKS format")
	}
	be := binary.BigEndian
	if v := be.Uint16(buf[6:]); v != 1 {
		return nil, fmt.Errorf("LUKS version %d is not supported", v)
	}
	h := &Header{
		PayloadOffset: be.Uint32(buf[104:]),
		KeyBytes:      be.Uint32(buf[108:]),
		MKDigestIter:  be.Uint32(buf[164:]),
	}
	var err error
	if h.CipherName, err = cstring(buf[8:40], "cipher name"); err != nil {
		return nil, err
	}
	if h.CipherMode, err = cstring(buf[40:72], "cipher mode"); err != nil {
		return nil, err
	}
	if h.HashSpec, err = cstring(buf[72:104], "hash spec"); err != nil {
		return nil, err
	}
	if h.UUID, err = cstring(buf[168:208], "uuid"); err != nil {
		return nil, err
	}
	copy(h.MKDigest[:], buf[112:132])
	copy(h.MKDigestSalt[:], buf[132:164])
	if h.KeyBytes == 0 || h.KeyBytes > maxKeyBytes {
		return nil, fmt.Errorf("LUKS master key length %d is not supported", h.KeyBytes)
	}
	if _, err := h.Spec(); err != nil {
		return nil, err
	}
	if _, err := hashByName(h.HashSpec); err != nil {
		return nil, err
	}
	materialSectors := (uint64(h.KeyBytes)*stripes + SectorSize - 1) / SectorSize
	for i := range h.Slots {
		r := buf[208+i*slotRecordBytes:]
		s := &h.Slots[i]
		switch be.Uint32(r) {
		case slotActive:
			s.Active = true
		case slotInactive:
		default:
			return nil, fmt.Errorf("Keyslot %d state (active/disable) is corrupted", i)
		}
		s.Iterations = be.Uint32(r[4:])
		copy(s.Salt[:], r[8:40])
		s.KeyOffset = be.Uint32(r[40:])
		s.Stripes = be.Uint32(r[44:])
		if s.Stripes != stripes {
			return nil, fmt.Errorf("Keyslot %d is corrupted (stripes %d != %d)", i, s.Stripes, stripes)
		}
		if s.KeyOffset < headerSectors {
			return nil, fmt.Errorf("Keyslot %d is overlapping with the LUKS header", i)
		}
		if uint64(s.KeyOffset)+materialSectors > uint64(h.PayloadOffset) {
			return nil, fmt.Errorf("Keyslot %d is overlapping with the encrypted payload", i)
		}
		for j := 0; j < i; j++ {
			o := uint64(h.Slots[j].KeyOffset)
			if uint64(s.KeyOffset) < o+materialSectors && o < uint64(s.KeyOffset)+materialSectors {
				return nil, fmt.Errorf("Keyslots %d and %d are overlapping in the header", j, i)
			}
		}
	}
	return h, nil
}

// Spec decodes the cipher name and mode ("aes", "xts-plain64",
// "cbc-essiv:sha256") with the key length into QEMU's option values.
func (h *Header) Spec() (Spec, error) {
	var s Spec
	if h.CipherName != "aes" {
		return s, fmt.Errorf("Cipher name '%s' is not supported", h.CipherName)
	}
	mode, ivgen, _ := strings.Cut(h.CipherMode, "-")
	s.Mode = mode
	if ivgen != "" {
		s.IVGen, s.IVHash, _ = strings.Cut(ivgen, ":")
	}
	bits := h.KeyBytes * 8
	if mode == "xts" {
		bits /= 2
	}
	s.Alg = fmt.Sprintf("aes-%d", bits)
	if _, ok := aesKeyBytes[s.Alg]; !ok {
		return s, fmt.Errorf("Cipher aes with key size %d bytes is not supported", h.KeyBytes)
	}
	if (mode == "ecb") != (ivgen == "") {
		return s, fmt.Errorf("Cipher mode '%s' is not supported", h.CipherMode)
	}
	switch mode {
	case "xts", "cbc", "ecb":
	default:
		return s, fmt.Errorf("Cipher mode '%s' is not supported", h.CipherMode)
	}
	switch s.IVGen {
	case "", "plain", "plain64":
		if s.IVHash != "" {
			return s, fmt.Errorf("Cipher mode '%s' is not supported", h.CipherMode)
		}
	case "essiv":
		if _, err := hashByName(s.IVHash); err != nil {
			return s, err
		}
	default:
		return s, fmt.Errorf("IV generator '%s' is not supported", s.IVGen)
	}
	return s, nil
}

// Encode serializes the header into HeaderBytes bytes.
func (h *Header) Encode() []byte {
	buf := make([]byte, HeaderBytes)
	be := binary.BigEndian
	copy(buf, Magic)
	be.PutUint16(buf[6:], 1)
	copy(buf[8:39], h.CipherName)
	copy(buf[40:71], h.CipherMode)
	copy(buf[72:103], h.HashSpec)
	be.PutUint32(buf[104:], h.PayloadOffset)
	be.PutUint32(buf[108:], h.KeyBytes)
	copy(buf[112:132], h.MKDigest[:])
	copy(buf[132:164], h.MKDigestSalt[:])
	be.PutUint32(buf[164:], h.MKDigestIter)
	copy(buf[168:207], h.UUID)
	for i, s := range h.Slots {
		r := buf[208+i*slotRecordBytes:]
		state := uint32(slotInactive)
		if s.Active {
			state = slotActive
		}
		be.PutUint32(r, state)
		be.PutUint32(r[4:], s.Iterations)
		copy(r[8:40], s.Salt[:])
		be.PutUint32(r[40:], s.KeyOffset)
		be.PutUint32(r[44:], s.Stripes)
	}
	return buf
}

// PayloadBytes is where the payload starts: for the standalone format the
// data offset, for qcow2 the length of the header area.
func (h *Header) PayloadBytes() int64 { return int64(h.PayloadOffset) * SectorSize }

// materialBytes is the length of one slot's AF-split key material.
func (h *Header) materialBytes() int { return int(h.KeyBytes) * stripes }

// Describe is what qemu-img info prints for the header (QEMU's
// QCryptoBlockInfoLUKS, with its JSON names; offsets in bytes).
func (h *Header) Describe() map[string]any {
	s, _ := h.Spec()
	m := map[string]any{
		"cipher-alg":       s.Alg,
		"cipher-mode":      s.Mode,
		"hash-alg":         h.HashSpec,
		"uuid":             h.UUID,
		"payload-offset":   h.PayloadBytes(),
		"master-key-iters": int64(h.MKDigestIter),
	}
	if s.IVGen != "" {
		m["ivgen-alg"] = s.IVGen
	}
	if s.IVHash != "" {
		m["ivgen-hash-alg"] = s.IVHash
	}
	slots := make([]any, 0, numSlots)
	for _, sl := range h.Slots {
		e := map[string]any{"active": sl.Active, "key-offset": int64(sl.KeyOffset) * SectorSize}
		if sl.Active {
			e["iters"] = int64(sl.Iterations)
			e["stripes"] = int64(sl.Stripes)
		}
		slots = append(slots, e)
	}
	m["slots"] = slots
	return m
}
