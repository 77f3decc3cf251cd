package net

import (
	"bytes"
	"testing"
)

// mtuFake is a backend with a large MTU, as netdev/user's stack.
type mtuFake struct {
	*fakeBackend
	mtu int
}

func (m mtuFake) MTU() int { return m.mtu }

// A backend with a large MTU: the device offers VIRTIO_NET_F_MTU with it
// in the configuration; a driver that takes it may send frames up to the
// MTU; one that does not is held to Ethernet's 1514 bytes. A backend
// without one offers neither the feature nor the field.
func TestMTUFeature(t *testing.T) {
	const mtu = 65520
	for _, negotiate := range []bool{true, false} {
		be := &fakeBackend{maxFrame: mtu + 18}
		want := uint64(linuxFeatures &^ offloadFeatures)
		if negotiate {
			want |= FeatureMTU
		}
		r := newRigOn(t, mtuFake{be, mtu}, want)
		r.be = be
		if r.net.DeviceFeatures()&FeatureMTU == 0 {
			t.Fatal("VIRTIO_NET_F_MTU not offered")
		}
		if got := r.net.ConfigSize(); got != configSize {
			t.Fatalf("config size %d, want %d", got, configSize)
		}
		if got := r.drv.DeviceConfig(cfgMTU, 2); got != mtu {
			t.Fatalf("config mtu %d, want %d", got, mtu)
		}
		big := frame(testMAC, mtu+14, 9)
		r.transmit(Hdr{}, big, 16)
		sent := r.be.sent.Load() == 1 && bytes.Equal(r.be.lastFrame(), big)
		if sent != negotiate {
			t.Fatalf("F_MTU negotiated %v: a %d-byte frame sent %v", negotiate, len(big), sent)
		}
	}
	plain := newRig(t, false, linuxFeatures)
	if plain.net.DeviceFeatures()&FeatureMTU != 0 || plain.net.ConfigSize() != cfgMTU {
		t.Fatalf("a 1500-byte backend offers F_MTU or the mtu field (config size %d)", plain.net.ConfigSize())
	}
}
