// Package bzimage reads a Linux x86 bzImage: its setup header (boot protocol
// 2.08 and later, Documentation/arch/x86/boot.rst), the compressed payload,
// and the vmlinux ELF inside it, so that machine/pc can boot the kernel by
// PVH (entry at XEN_ELFNOTE_PHYS32_ENTRY) and skip the in-guest decompressor,
// which under a software hypervisor is the slowest part of a boot.
package bzimage

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Setup header field offsets from the start of the file (boot.rst, "THE
// REAL-MODE KERNEL HEADER"). The header is little-endian and starts at
// 0x1f1, in the boot sector's last bytes. Fields after 0x202 exist only
// from the protocol version that introduced them: payload_offset and
// payload_length from 2.08 (MinVersion), pref_address and init_size from
// 2.10; in an older header those bytes belong to the setup code.
const (
	offSetupSects      = 0x1f1
	offBootFlag        = 0x1fe
	offHeaderMagic     = 0x202
	offVersion         = 0x206
	offLoadFlags       = 0x211
	offCode32Start     = 0x214
	offKernelAlignment = 0x230
	offRelocatable     = 0x234
	offXLoadFlags      = 0x236
	offPayloadOffset   = 0x248
	offPayloadLength   = 0x24c
	offPrefAddress     = 0x258
	offInitSize        = 0x260
	headerEnd          = 0x264 // end of init_size, the last field we read

	bootFlag    = 0xaa55     // boot sector signature at 0x1fe
	headerMagic = 0x53726448 // "HdrS"

	// MinVersion is the first protocol with payload_offset/length (2.08).
	MinVersion = 0x0208
)

// Load flags and xloadflags bits.
const (
	LoadedHigh            = 1 << 0 // loadflags: protected-mode code at 0x100000
	XLFKernel64           = 1 << 0 // xloadflags: has the 64-bit entry at +0x200
	XLFCanBeLoadedAbove4G = 1 << 1
)

// ErrNotBzImage is returned for data without a bzImage setup header.
var ErrNotBzImage = errors.New("not a bzImage")

// Image is a parsed bzImage. Payload aliases the data given to Parse.
type Image struct {
	SetupSects uint8  // 512-byte sectors of real-mode setup after the boot sector
	Version    uint16 // boot protocol, e.g. 0x020f
	// LoadFlags is loadflags; bit 0 (LoadedHigh) is set in every bzImage.
	LoadFlags uint8
	// Code32Start is code32_start, the 32-bit entry's default address
	// (0x100000 for a bzImage); the 64-bit entry is 0x200 past where the
	// protected-mode code is loaded.
	Code32Start uint32
	// KernelAlignment is kernel_alignment (2.05+): the physical alignment
	// a relocatable kernel must be loaded at, in bytes.
	KernelAlignment uint32
	// Relocatable is relocatable_kernel (2.05+): the protected-mode code
	// may run at any KernelAlignment-aligned address.
	Relocatable bool
	// XLoadFlags is xloadflags (2.12+, zero before): XLFKernel64 and
	// XLFCanBeLoadedAbove4G matter to the 64-bit boot protocol.
	XLoadFlags    uint16
	PayloadOffset uint32 // from the start of the protected-mode code
	// PayloadLength is payload_length in bytes, the size trailer included.
	PayloadLength uint32
	// PrefAddress is pref_address (2.10+): where a relocatable kernel
	// prefers to be loaded; a non-relocatable one moves itself there.
	PrefAddress uint64
	InitSize    uint32 // memory the kernel needs from its load address, >= the decompressed size

	// SetupSize is the byte length of the real-mode part ((setup_sects+1)*512);
	// the protected-mode kernel starts there.
	SetupSize int
	// Payload is the compressed kernel, including the 4-byte little-endian
	// decompressed size that the kernel's build appends.
	Payload []byte
	// Compression is the payload's format, detected from its magic bytes.
	Compression Compression
}

// HasSetupHeader reports whether data starts like a bzImage: the boot
// sector's 0xaa55 flag and the "HdrS" setup header magic. It needs only
// the file's first headerEnd bytes, not the payload Parse locates.
func HasSetupHeader(data []byte) bool {
	le := binary.LittleEndian
	return len(data) >= headerEnd && le.Uint16(data[offBootFlag:]) == bootFlag &&
		le.Uint32(data[offHeaderMagic:]) == headerMagic
}

// Parse reads the setup header of a bzImage and locates its payload. It
// checks only what it relies on (signature, magic, version, the payload
// inside data); errors for data that is not a bzImage at all wrap
// ErrNotBzImage, so a caller can try the file as an ELF vmlinux instead.
func Parse(data []byte) (*Image, error) {
	if len(data) < headerEnd {
		return nil, fmt.Errorf("%w: %d bytes is shorter than a setup header", ErrNotBzImage, len(data))
	}
	le := binary.LittleEndian
	if le.Uint16(data[offBootFlag:]) != bootFlag {
		return nil, fmt.Errorf("%w: boot flag %#x, want 0xaa55", ErrNotBzImage, le.Uint16(data[offBootFlag:]))
	}
	if le.Uint32(data[offHeaderMagic:]) != headerMagic {
		return nil, fmt.Errorf("%w: no HdrS magic", ErrNotBzImage)
	}
	img := &Image{
		SetupSects:      data[offSetupSects],
		Version:         le.Uint16(data[offVersion:]),
		LoadFlags:       data[offLoadFlags],
		Code32Start:     le.Uint32(data[offCode32Start:]),
		KernelAlignment: le.Uint32(data[offKernelAlignment:]),
		Relocatable:     data[offRelocatable] != 0,
		XLoadFlags:      le.Uint16(data[offXLoadFlags:]),
		PayloadOffset:   le.Uint32(data[offPayloadOffset:]),
		PayloadLength:   le.Uint32(data[offPayloadLength:]),
		PrefAddress:     le.Uint64(data[offPrefAddress:]),
		InitSize:        le.Uint32(data[offInitSize:]),
	}
	if img.Version < MinVersion {
		return nil, fmt.Errorf("boot protocol %d.%02d is older than 2.08 (no payload fields)", img.Version>>8, img.Version&0xff)
	}
	// The file is the boot sector, setup_sects sectors of real-mode setup,
	// then the protected-mode code, which payload_offset counts from.
	sects := int(img.SetupSects)
	if sects == 0 {
		sects = 4 // boot.rst: "If this field is 0, the real value is 4."
	}
	img.SetupSize = (sects + 1) * 512
	if img.SetupSize > len(data) {
		return nil, fmt.Errorf("setup of %d bytes is beyond the %d-byte file", img.SetupSize, len(data))
	}
	start := uint64(img.SetupSize) + uint64(img.PayloadOffset)
	end := start + uint64(img.PayloadLength)
	if img.PayloadLength < 4 || end > uint64(len(data)) {
		return nil, fmt.Errorf("payload at %#x+%#x is outside the %d-byte file", start, img.PayloadLength, len(data))
	}
	img.Payload = data[start:end:end]
	img.Compression = detect(img.Payload)
	return img, nil
}

// ProtectedMode returns the protected-mode kernel (what the 64-bit boot
// protocol loads at the kernel's load address) from the file data. data
// must be what was given to Parse; the result aliases it.
func (img *Image) ProtectedMode(data []byte) []byte {
	if img.SetupSize > len(data) {
		return nil
	}
	return data[img.SetupSize:]
}

// DeclaredSize is the decompressed size the kernel build appended to the
// payload (arch/x86/boot/compressed/Makefile's size_append, little-endian);
// Decompress insists on it. Parse guarantees the 4 bytes exist.
func (img *Image) DeclaredSize() uint32 {
	return binary.LittleEndian.Uint32(img.Payload[len(img.Payload)-4:])
}
