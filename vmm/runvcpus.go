package vmm

import "sync"

// RunVCPUs runs every vCPU on its own goroutine (each locked to an OS
// thread) until one stops; it then kicks the others and waits for them.
// It returns the first stop and, for StopError, that vCPU's error.
func RunVCPUs(vcpus []*VCPU) (Stop, *VCPU) {
	type result struct {
		s Stop
		v *VCPU
	}
	first := make(chan result, len(vcpus))
	var wg sync.WaitGroup
	for _, v := range vcpus {
		wg.Add(1)
		go func(v *VCPU) {
			defer wg.Done()
			first <- result{v.Run(), v}
		}(v)
	}
	r := <-first
	for _, v := range vcpus {
		v.Kick(StopRequested)
	}
	wg.Wait()
	return r.s, r.v
}
