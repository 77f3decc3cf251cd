package luks

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"
)

// ErrBadPassword is QEMU's message when no key slot opens with the secret.
var ErrBadPassword = errors.New("Invalid password, cannot unlock any keyslot")

// CreateOptions are qemu-img's LUKS creation options (encrypt.* for
// qcow2): the payload cipher, hash-alg for PBKDF2 and the AF splitter, and
// iter-time, the milliseconds PBKDF2 should take to unlock slot 0. Zero
// values take QEMU's defaults: aes-256, xts, plain64 (sha256 for essiv),
// sha256, 2000 ms.
type CreateOptions struct {
	Spec
	HashAlg  string
	IterTime int64
}

// withDefaults fills in QEMU's defaults.
func (o CreateOptions) withDefaults() CreateOptions {
	if o.Alg == "" {
		o.Alg = "aes-256"
	}
	if o.Mode == "" {
		o.Mode = "xts"
	}
	if o.IVGen == "" && o.Mode != "ecb" {
		o.IVGen = "plain64"
	}
	if o.IVGen == "essiv" && o.IVHash == "" {
		o.IVHash = "sha256"
	}
	if o.HashAlg == "" {
		o.HashAlg = "sha256"
	}
	if o.IterTime == 0 {
		o.IterTime = 2000
	}
	return o
}

// Minimum PBKDF2 iterations, as QEMU (and cryptsetup) enforce.
const minIterations = 1000

// iterationsFor measures this machine's PBKDF2 speed with alg and returns
// how many iterations take ms milliseconds (QEMU's
// qcrypto_pbkdf2_count_iters, scaled as in qcrypto_block_luks_create).
func iterationsFor(alg string, keyBytes int, ms int64) (uint32, error) {
	h, err := hashByName(alg)
	if err != nil {
		return 0, err
	}
	const probe = 1 << 14
	start := time.Now()
	if _, err := pbkdf2.Key(h, "probe", make([]byte, saltBytes), probe, keyBytes); err != nil {
		return 0, err
	}
	el := max(time.Since(start), time.Microsecond)
	n := int64(probe) * ms * int64(time.Millisecond) / int64(el)
	return uint32(min(max(n, minIterations), 1<<31)), nil
}

// NewHeader makes a LUKS header whose slot 0 holds a new random master key
// under password. It returns the header, the header area (PayloadBytes
// long: the header, then slot 0's key material, zeroes elsewhere) and the
// payload cipher.
//
// Layout as QEMU's qcrypto_block_luks_create: the header in the first
// 4 KiB, then eight key material areas, each rounded up to a multiple of
// 4 KiB, then the payload.
func NewHeader(o CreateOptions, password []byte) (*Header, []byte, Cipher, error) {
	o = o.withDefaults()
	keyBytes, err := o.KeyBytes()
	if err != nil {
		return nil, nil, nil, err
	}
	hf, err := hashByName(o.HashAlg)
	if err != nil {
		return nil, nil, nil, err
	}
	if o.IterTime < 0 {
		return nil, nil, nil, fmt.Errorf("iter-time %d is out of range", o.IterTime)
	}
	h := &Header{
		CipherName: "aes",
		CipherMode: o.Mode,
		HashSpec:   o.HashAlg,
		KeyBytes:   uint32(keyBytes),
		UUID:       newUUID(),
	}
	if o.IVGen != "" {
		h.CipherMode += "-" + o.IVGen
		if o.IVGen == "essiv" {
			h.CipherMode += ":" + o.IVHash
		}
	}
	master := randomBytes(keyBytes)
	payload, err := NewCipher(o.Spec, master)
	if err != nil {
		return nil, nil, nil, err
	}
	// The master key digest takes an eighth of iter-time, as QEMU.
	iters, err := iterationsFor(o.HashAlg, keyBytes, o.IterTime)
	if err != nil {
		return nil, nil, nil, err
	}
	h.MKDigestIter = max(iters/8, minIterations)
	copy(h.MKDigestSalt[:], randomBytes(saltBytes))
	digest, err := pbkdf2.Key(hf, string(master), h.MKDigestSalt[:], int(h.MKDigestIter), digestBytes)
	if err != nil {
		return nil, nil, nil, err
	}
	copy(h.MKDigest[:], digest)

	materialSectors, slotSectors := slotLayout(keyBytes)
	for i := range h.Slots {
		h.Slots[i] = Slot{KeyOffset: headerSectors + uint32(i)*slotSectors, Stripes: stripes}
	}
	h.PayloadOffset = headerSectors + numSlots*slotSectors

	s := &h.Slots[0]
	s.Active = true
	s.Iterations = iters
	copy(s.Salt[:], randomBytes(saltBytes))
	slotKey, err := pbkdf2.Key(hf, string(password), s.Salt[:], int(s.Iterations), keyBytes)
	if err != nil {
		return nil, nil, nil, err
	}
	split := afSplit(hf, master, stripes, randomBytes(keyBytes*(stripes-1)))
	material := make([]byte, materialSectors*SectorSize)
	copy(material, split)
	slotCipher, err := NewCipher(o.Spec, slotKey)
	if err != nil {
		return nil, nil, nil, err
	}
	slotCipher.Encrypt(0, material)

	area := make([]byte, h.PayloadBytes())
	copy(area, h.Encode())
	copy(area[int64(s.KeyOffset)*SectorSize:], material)
	return h, area, payload, nil
}

// ReadFunc reads len(p) bytes of the header area at off.
type ReadFunc func(p []byte, off int64) error

// Unlock tries password on every active slot, in order, and returns the
// payload cipher of the first that opens (its AF-merged key matching the
// master key digest), or ErrBadPassword.
func (h *Header) Unlock(read ReadFunc, password []byte) (Cipher, error) {
	spec, err := h.Spec()
	if err != nil {
		return nil, err
	}
	hf, err := hashByName(h.HashSpec)
	if err != nil {
		return nil, err
	}
	n := h.materialBytes()
	material := make([]byte, (n+SectorSize-1)/SectorSize*SectorSize)
	master := make([]byte, h.KeyBytes)
	for _, s := range h.Slots {
		if !s.Active {
			continue
		}
		slotKey, err := pbkdf2.Key(hf, string(password), s.Salt[:], int(max(s.Iterations, 1)), int(h.KeyBytes))
		if err != nil {
			return nil, err
		}
		if err := read(material, int64(s.KeyOffset)*SectorSize); err != nil {
			return nil, fmt.Errorf("reading LUKS key material: %w", err)
		}
		c, err := NewCipher(spec, slotKey)
		if err != nil {
			return nil, err
		}
		c.Decrypt(0, material)
		afMerge(hf, material[:n], stripes, master)
		digest, err := pbkdf2.Key(hf, string(master), h.MKDigestSalt[:], int(max(h.MKDigestIter, 1)), digestBytes)
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(digest, h.MKDigest[:]) == 1 {
			return NewCipher(spec, master)
		}
	}
	return nil, ErrBadPassword
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// newUUID is a random (version 4) UUID in the lower-case text form.
func newUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// slotLayout is the size in sectors of one key slot's material (the
// AF-split key: keyBytes times the stripes) and of the area it gets,
// rounded up to 4 KiB, as QEMU's qcrypto_block_luks_create lays them out.
func slotLayout(keyBytes int) (materialSectors, slotSectors uint32) {
	materialSectors = uint32((keyBytes*stripes + SectorSize - 1) / SectorSize)
	slotSectors = (materialSectors + headerSectors - 1) / headerSectors * headerSectors
	return materialSectors, slotSectors
}

// HeaderAreaBytes is where the payload starts in a header NewHeader
// would make with o: the 4 KiB header and the eight key slot areas.
// qemu-img measure adds it for encrypt.format=luks (QEMU's
// qcrypto_block_calculate_payload_offset). The options are checked as
// NewHeader checks them, without deriving any key.
func HeaderAreaBytes(o CreateOptions) (int64, error) {
	o = o.withDefaults()
	keyBytes, err := o.KeyBytes()
	if err != nil {
		return 0, err
	}
	if _, err := hashByName(o.HashAlg); err != nil {
		return 0, err
	}
	if _, err := NewCipher(o.Spec, make([]byte, keyBytes)); err != nil {
		return 0, err
	}
	_, slot := slotLayout(keyBytes)
	return int64(headerSectors+numSlots*slot) * SectorSize, nil
}
