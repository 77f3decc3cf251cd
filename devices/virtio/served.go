package virtio

// QueueServer is an optional Backend interface for queues whose buffers
// wait for the device rather than being served as they arrive: a
// virtio-net receive queue holds the driver's buffers until a frame comes
// from the host. For a queue where ServesQueue is true the transport does
// not pop chains; it hands the running queue to the backend with
// StartQueue (after Activate, on DRIVER_OK) and calls QueueNotified on the
// queue's goroutine for every driver notification. The backend must stop
// using the queue before its Reset or Release returns.
type QueueServer interface {
	ServesQueue(qi int) bool
	StartQueue(qi int, q *ServedQueue)
	QueueNotified(qi int)
}

// ServedQueue is a running queue handed to a QueueServer: the Queue
// operations (Pop, Fill, Publish, Unpop, EnableNotify...) from one
// goroutine at a time, plus the transport's interrupt and error paths.
type ServedQueue struct {
	*Queue
	p  *PCI
	qi int
}

// Interrupt signals the driver about the used elements published since the
// last signal, if it asked for one (EVENT_IDX or the NO_INTERRUPT flag).
func (s *ServedQueue) Interrupt() {
	if s.NeedInterrupt() {
		s.p.interrupt(uint16(s.p.vectors[s.qi].Load()), isrQueue)
	}
}

// Broken reports a driver that broke the ring (Pop's ErrAvailIndex): the
// device needs a reset, and the backend must stop serving the queue.
func (s *ServedQueue) Broken() {
	s.p.InvalidChains.Add(1)
	s.p.queueBroken()
}

// CountInvalid counts a malformed chain the backend met (the transport's
// InvalidChains counter).
func (s *ServedQueue) CountInvalid() { s.p.InvalidChains.Add(1) }
