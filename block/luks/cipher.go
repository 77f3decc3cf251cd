package luks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// SectorSize is the unit of encryption: every 512-byte sector has its own
// IV, derived from its sector number (QEMU's QCRYPTO_BLOCK_LUKS_SECTOR_SIZE
// and the legacy qcow2 AES sector).
const SectorSize = 512

// Cipher encrypts and decrypts whole sectors in place. sector is the
// number of the first sector of buf; len(buf) must be a multiple of
// SectorSize. Safe for concurrent use.
type Cipher interface {
	Encrypt(sector uint64, buf []byte)
	Decrypt(sector uint64, buf []byte)
}

// hashByName returns the hash QEMU names alg (QCryptoHashAlgorithm).
func hashByName(alg string) (func() hash.Hash, error) {
	switch alg {
	case "md5":
		return md5.New, nil
	case "sha1":
		return sha1.New, nil
	case "sha224":
		return sha256.New224, nil
	case "sha256":
		return sha256.New, nil
	case "sha384":
		return sha512.New384, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("Hash algorithm %s not supported", alg)
}

// aesKeyBytes is the key length of QEMU's AES cipher names.
var aesKeyBytes = map[string]int{"aes-128": 16, "aes-192": 24, "aes-256": 32}

// Spec names a sector cipher as QEMU's LUKS options do: cipher-alg
// (aes-128, aes-192, aes-256), cipher-mode (xts, cbc, ecb), ivgen-alg
// (plain, plain64, essiv; none for ecb) and ivgen-hash-alg (essiv only).
type Spec struct {
	Alg, Mode, IVGen, IVHash string
}

// KeyBytes is the key length the spec needs (XTS takes two AES keys).
func (s Spec) KeyBytes() (int, error) {
	n, ok := aesKeyBytes[s.Alg]
	if !ok {
		return 0, fmt.Errorf("Cipher algorithm %s not supported", s.Alg)
	}
	if s.Mode == "xts" {
		n *= 2
	}
	return n, nil
}

// NewCipher keys the spec's sector cipher with key.
func NewCipher(s Spec, key []byte) (Cipher, error) {
	n, err := s.KeyBytes()
	if err != nil {
		return nil, err
	}
	if len(key) != n {
		return nil, fmt.Errorf("cipher %s-%s needs a %d-byte key, not %d", s.Alg, s.Mode, n, len(key))
	}
	c := &sectorCipher{mode: s.Mode}
	switch s.Mode {
	case "xts":
		if c.block, err = aes.NewCipher(key[:n/2]); err == nil {
			c.tweak, err = aes.NewCipher(key[n/2:])
		}
	case "cbc", "ecb":
		c.block, err = aes.NewCipher(key)
	default:
		return nil, fmt.Errorf("Cipher mode %s not supported", s.Mode)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case s.Mode == "ecb":
		if s.IVGen != "" {
			return nil, errors.New("ECB mode takes no IV generator")
		}
	case s.IVGen == "plain" || s.IVGen == "plain64":
		c.ivgen = s.IVGen
	case s.IVGen == "essiv":
		// ESSIV: the IV is the plain64 IV encrypted with an AES key that
		// is the hash of the data key (the digest's length picks
		// AES-128/192/256, as QEMU's qcrypto_block_luks_essiv_cipher).
		h, err := hashByName(s.IVHash)
		if err != nil {
			return nil, err
		}
		d := h()
		d.Write(key)
		sum := d.Sum(nil)
		if len(sum) != 16 && len(sum) != 24 && len(sum) != 32 {
			return nil, fmt.Errorf("Hash algorithm %s is not suitable for essiv with %s", s.IVHash, s.Alg)
		}
		if c.essiv, err = aes.NewCipher(sum); err != nil {
			return nil, err
		}
		c.ivgen = "essiv"
	default:
		return nil, fmt.Errorf("IV generator %q not supported", s.IVGen)
	}
	return c, nil
}

// sectorCipher is AES in XTS, CBC or ECB mode over 512-byte sectors.
type sectorCipher struct {
	mode         string
	ivgen        string
	block, tweak cipher.Block // tweak: the second XTS key
	essiv        cipher.Block
}

// iv is the sector's 16-byte IV: its number little-endian (truncated to
// 32 bits for "plain"), encrypted for essiv.
func (c *sectorCipher) iv(sector uint64, iv *[16]byte) {
	*iv = [16]byte{}
	if c.ivgen == "plain" {
		binary.LittleEndian.PutUint32(iv[:], uint32(sector))
	} else {
		binary.LittleEndian.PutUint64(iv[:], sector)
	}
	if c.ivgen == "essiv" {
		c.essiv.Encrypt(iv[:], iv[:])
	}
}

func (c *sectorCipher) Encrypt(sector uint64, buf []byte) { c.crypt(sector, buf, true) }
func (c *sectorCipher) Decrypt(sector uint64, buf []byte) { c.crypt(sector, buf, false) }

func (c *sectorCipher) crypt(sector uint64, buf []byte, enc bool) {
	var iv [16]byte
	for off := 0; off+SectorSize <= len(buf); off, sector = off+SectorSize, sector+1 {
		s := buf[off : off+SectorSize]
		switch c.mode {
		case "xts":
			c.iv(sector, &iv)
			c.xts(s, iv, enc)
		case "cbc":
			c.iv(sector, &iv)
			if enc {
				cipher.NewCBCEncrypter(c.block, iv[:]).CryptBlocks(s, s)
			} else {
				cipher.NewCBCDecrypter(c.block, iv[:]).CryptBlocks(s, s)
			}
		case "ecb":
			for i := 0; i < len(s); i += aes.BlockSize {
				if enc {
					c.block.Encrypt(s[i:], s[i:])
				} else {
					c.block.Decrypt(s[i:], s[i:])
				}
			}
		}
	}
}

// xts is IEEE P1619 XTS over one sector (a whole number of blocks, so no
// ciphertext stealing): the tweak is the IV encrypted with the second key,
// multiplied by x in GF(2^128) (little-endian, polynomial 0x87) per block.
func (c *sectorCipher) xts(s []byte, iv [16]byte, enc bool) {
	var t [16]byte
	c.tweak.Encrypt(t[:], iv[:])
	for i := 0; i < len(s); i += aes.BlockSize {
		b := s[i : i+aes.BlockSize]
		for j := range b {
			b[j] ^= t[j]
		}
		if enc {
			c.block.Encrypt(b, b)
		} else {
			c.block.Decrypt(b, b)
		}
		for j := range b {
			b[j] ^= t[j]
		}
		lo, hi := binary.LittleEndian.Uint64(t[:8]), binary.LittleEndian.Uint64(t[8:])
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
		binary.LittleEndian.PutUint64(t[:8], lo)
		binary.LittleEndian.PutUint64(t[8:], hi)
	}
}

// NewLegacyAES is qcow2's crypt_method 1 (QEMU's qcrypto_block_qcow):
// AES-128-CBC with plain64 IVs, keyed by the password's first 16 bytes,
// zero padded.
func NewLegacyAES(password []byte) (Cipher, error) {
	key := make([]byte, 16)
	copy(key, password)
	return NewCipher(Spec{Alg: "aes-128", Mode: "cbc", IVGen: "plain64"}, key)
}
