package qmp

import (
	"errors"
	"fmt"
	"sync"
)

// Job statuses (qapi/job.json JobStatus) that Petrel's jobs pass through.
const (
	jobCreated   = "created"
	jobRunning   = "running"
	jobWaiting   = "waiting"
	jobPending   = "pending"
	jobAborting  = "aborting"
	jobConcluded = "concluded"
	jobNull      = "null"
)

// jobNext is the part of QEMU's job state transition table (job.c, JobSTT)
// for jobs that never pause, are never ready and finalize themselves, as
// the snapshot jobs. A success runs created → running → waiting → pending
// → concluded, a failure running → aborting → concluded; job-dismiss
// takes a concluded job to null. Staying in aborting is allowed (QEMU
// updates a failed job's status twice).
var jobNext = map[string][]string{
	"":           {jobCreated},
	jobCreated:   {jobRunning, jobAborting, jobNull},
	jobRunning:   {jobWaiting, jobAborting},
	jobWaiting:   {jobPending, jobAborting},
	jobPending:   {jobConcluded, jobAborting},
	jobAborting:  {jobConcluded, jobAborting},
	jobConcluded: {jobNull},
}

// JobInfo is one entry of query-jobs, fields in QEMU's order.
type JobInfo struct {
	// ID is the client's job-id (well formed as jobIDWellFormed checks).
	ID string `json:"id"`
	// Type is the QAPI JobType: "snapshot-save", "snapshot-load" or
	// "snapshot-delete".
	Type string `json:"type"`
	// Status is one of the job status constants above.
	Status string `json:"status"`
	// CurrentProgress and TotalProgress are in abstract units, as QEMU's:
	// a snapshot job is one unit of work.
	CurrentProgress int64 `json:"current-progress"`
	TotalProgress   int64 `json:"total-progress"`
	// Error is set once the job has failed.
	Error *string `json:"error,omitempty"`
}

// jobStatusChange is the data of JOB_STATUS_CHANGE, in QEMU's order.
type jobStatusChange struct {
	Status string `json:"status"`
	ID     string `json:"id"`
}

// jobTable holds the jobs that have not been dismissed. A transition and
// its JOB_STATUS_CHANGE event happen under mu, so clients see every job's
// events in the order of its transitions.
type jobTable struct {
	mu   sync.Mutex // guards list and every JobInfo in it
	list []*JobInfo // newest first, as QEMU lists them
	// emit is the server's Emit, set by NewServer; called with mu held.
	emit func(event string, data any)
}

// jobIDWellFormed is QEMU's id_wellformed: a letter, then letters,
// digits, '-', '.' and '_'.
func jobIDWellFormed(id string) bool {
	isAlpha := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	if id == "" || !isAlpha(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isAlpha(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

// create adds a job in status created, as QEMU's job_create.
func (t *jobTable) create(id, typ string) (*JobInfo, error) {
	if !jobIDWellFormed(id) {
		return nil, Errorf("Invalid job ID '%s'", id)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.find(id) != nil {
		return nil, Errorf("Job ID '%s' already in use", id)
	}
	j := &JobInfo{ID: id, Type: typ}
	t.list = append([]*JobInfo{j}, t.list...)
	t.transition(j, jobCreated)
	return j, nil
}

// find returns the job with id, or nil. Called with mu held.
func (t *jobTable) find(id string) *JobInfo {
	for _, j := range t.list {
		if j.ID == id {
			return j
		}
	}
	return nil
}

// transition moves j to status to and emits JOB_STATUS_CHANGE if the
// status changed; null removes the job. Called with mu held.
func (t *jobTable) transition(j *JobInfo, to string) {
	allowed := false
	for _, s := range jobNext[j.Status] {
		allowed = allowed || s == to
	}
	if !allowed {
		// The jobs' own code drives every transition; no input can.
		panic(fmt.Sprintf("qmp: job %s: transition %s -> %s", j.ID, j.Status, to))
	}
	changed := j.Status != to
	j.Status = to
	if to == jobNull {
		for i, o := range t.list {
			if o == j {
				t.list = append(t.list[:i:i], t.list[i+1:]...)
				break
			}
		}
	}
	if changed && t.emit != nil {
		t.emit("JOB_STATUS_CHANGE", jobStatusChange{Status: to, ID: j.ID})
	}
}

// start moves a created job to running.
func (t *jobTable) start(j *JobInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.transition(j, jobRunning)
}

// run does a running job's work, one unit of progress, and concludes it:
// through waiting and pending on success (the job finalizes itself), through
// aborting with err's text on failure. The job then waits for job-dismiss.
func (t *jobTable) run(j *JobInfo, work func() error) {
	t.mu.Lock()
	j.TotalProgress = j.CurrentProgress + 1
	t.mu.Unlock()

	err := work()

	t.mu.Lock()
	defer t.mu.Unlock()
	j.CurrentProgress++
	if err != nil {
		msg := errorText(err)
		j.Error = &msg
		t.transition(j, jobAborting)
		t.transition(j, jobConcluded)
		return
	}
	t.transition(j, jobWaiting)
	t.transition(j, jobPending)
	t.transition(j, jobConcluded)
}

// dismiss removes a concluded job (job-dismiss).
func (t *jobTable) dismiss(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.find(id)
	if j == nil {
		return Errorf("Job not found")
	}
	if j.Status != jobConcluded {
		return Errorf("Job '%s' in state '%s' cannot accept command verb 'dismiss'", id, j.Status)
	}
	t.transition(j, jobNull)
	return nil
}

// query copies the jobs for query-jobs.
func (t *jobTable) query() []JobInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]JobInfo, 0, len(t.list))
	for _, j := range t.list {
		c := *j
		if j.Error != nil {
			e := *j.Error
			c.Error = &e
		}
		out = append(out, c)
	}
	return out
}

// errorText is an error's message as QMP reports it: a machine's *Error
// without its class.
func errorText(err error) string {
	var qe *Error
	if errors.As(err, &qe) {
		return qe.Desc
	}
	return err.Error()
}

// jobCommands are the generic job commands; Petrel's jobs cannot be
// paused, cancelled or finalized by hand, so job-pause, job-cancel and
// job-finalize are absent.
func jobCommands() map[string]*command {
	return map[string]*command{
		"query-jobs": {run: func(s *Server, _ map[string]any) (any, func(), error) {
			return s.jobs.query(), nil, nil
		}},
		"job-dismiss": {
			args:     map[string]argType{"id": tStr},
			required: []string{"id"},
			run: func(s *Server, a map[string]any) (any, func(), error) {
				return nil, nil, s.jobs.dismiss(a["id"].(string))
			},
		},
	}
}
