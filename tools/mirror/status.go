package mirror

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/twinslot/twinslot/omaha"
)

// Phase says what an Event reports.
type Phase string

// Phases, in the order a round goes through them.
const (
	PhaseCheck       Phase = "check"       // checking in upstream
	PhaseUnreachable Phase = "unreachable" // the check failed transiently; retrying
	PhaseNoUpdate    Phase = "noupdate"    // the upstream offers nothing for the pair
	PhaseUpToDate    Phase = "uptodate"    // the local channel already carries the offered version
	PhaseOffer       Phase = "offer"       // a new version is offered; downloading
	PhaseDownload    Phase = "download"    // download progress (Done of Total bytes)
	PhaseRetry       Phase = "retry"       // a download failed transiently; resuming
	PhaseRefused     Phase = "refused"     // a downloaded file has another size or hash than offered
	PhasePublished   Phase = "published"   // the local channel now carries the version
	PhaseFailed      Phase = "failed"      // the pair's round failed; nothing was published
)

// Event is one status report of a Mirror, for people (a line, a progress bar) and scripts
// (one JSON object per line).
type Event struct {
	Time    time.Time `json:"time"`
	Phase   Phase     `json:"phase"`
	Pair    string    `json:"pair"`              // Pair.String()
	Version string    `json:"version,omitempty"` // the offered version
	File    string    `json:"file,omitempty"`    // a file of the offer, when the event is about one
	Done    int64     `json:"done,omitempty"`    // bytes downloaded (all files of the offer)
	Total   int64     `json:"total,omitempty"`   // bytes offered (all files of the offer)
	// Resumed is how many bytes of the offer were already on disk when the download started.
	Resumed int64 `json:"resumed,omitempty"`
	// Retry is when the next attempt starts (PhaseUnreachable, PhaseRetry, PhaseFailed in Run).
	Retry time.Duration `json:"retry_ns,omitempty"`
	// Expected and Got are the offered and the downloaded value of a size or hash mismatch.
	Expected string `json:"expected,omitempty"`
	Got      string `json:"got,omitempty"`
	Message  string `json:"message"` // one line for people
}

// Stats are the Mirror's counters since it started, and per pair the last outcome.
type Stats struct {
	Checks          int64                `json:"checks"`           // update checks sent upstream
	CheckFailures   int64                `json:"check_failures"`   // checks that failed (unreachable, error answers)
	Downloads       int64                `json:"downloads"`        // files downloaded and verified
	DownloadRetries int64                `json:"download_retries"` // download attempts that failed transiently
	BytesDownloaded int64                `json:"bytes_downloaded"` // bytes fetched (not counting resumed ones)
	BytesResumed    int64                `json:"bytes_resumed"`    // bytes already on disk when a download resumed
	IntegrityErrors int64                `json:"integrity_errors"` // files refused for a wrong size or hash
	Published       int64                `json:"published"`        // versions published locally
	PublishFailures int64                `json:"publish_failures"` // local publishes the server refused or that failed
	Pairs           map[string]PairState `json:"pairs"`            // by Pair.String()
	Updated         time.Time            `json:"updated,omitzero"` // time of the last change
}

// PairState is the last outcome for one pair.
type PairState struct {
	Upstream  string    `json:"upstream_version,omitempty"` // the version last offered
	Local     string    `json:"local_version,omitempty"`    // the version last published or found locally
	LastCheck time.Time `json:"last_check,omitzero"`        // last check that got an answer
	LastError string    `json:"last_error,omitempty"`       // "" after a good round
	ErrorAt   time.Time `json:"last_error_at,omitzero"`     // when LastError happened
}

// IntegrityError is a downloaded file whose size or hash is not what the upstream offered.
// Nothing of the offer is published.
type IntegrityError struct {
	File     string // package name
	What     string // "size", "sha256", "sha1"
	Expected string // offered value
	Got      string // value of the downloaded file
}

func (e *IntegrityError) Error() string {
	return fmt.Sprintf("%s: %s mismatch: the upstream offered %s, the downloaded file has %s; nothing was published (the upstream, or something between, serves another file than it announces)",
		e.File, e.What, e.Expected, e.Got)
}

// UpstreamError is an update check that did not get an answer the mirror can use.
type UpstreamError struct {
	Upstream  string
	Transient bool // unreachable, 5xx, timeout: worth retrying
	Attempts  int  // checks tried in the round
	Err       error
}

func (e *UpstreamError) Error() string {
	if e.Transient {
		return fmt.Sprintf("upstream %s is unreachable or failing (%d attempt(s)): %v: check --upstream and the network", e.Upstream, e.Attempts, cause(e.Err))
	}
	return fmt.Sprintf("upstream %s: %v", e.Upstream, cause(e.Err))
}

// cause strips the layers that repeat what UpstreamError says (the operation, the URL).
func cause(err error) error {
	var oe *omaha.Error
	if errors.As(err, &oe) && oe.Status == "" {
		err = oe.Err
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err
}

func (e *UpstreamError) Unwrap() error { return e.Err }
