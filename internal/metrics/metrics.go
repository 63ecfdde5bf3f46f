// Package metrics holds claimcheck's Prometheus metrics, one set per
// process, served at /metrics. Names start with claimcheck_; labels are
// bounded (job types, states, routes, results) — never ids or users.
package metrics

import (
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Registry is this process's registry: Go runtime and process metrics plus
// everything below.
var Registry = prometheus.NewRegistry()

var factory = promauto.With(Registry)

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

var (
	// JobsSubmitted counts accepted submissions by job type.
	JobsSubmitted = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "claimcheck_jobs_submitted_total", Help: "Jobs accepted (202), by type.",
	}, []string{"type"})
	// JobsFinished counts jobs reaching a final state, by type and state.
	JobsFinished = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "claimcheck_jobs_finished_total", Help: "Jobs that ended, by type and final state (succeeded, failed, canceled).",
	}, []string{"type", "state"})
	// TokenVerifications counts job-token checks by result ("ok",
	// "cached", or the refusal reason).
	TokenVerifications = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "claimcheck_token_verifications_total", Help: "Token verifications by kind and result.",
	}, []string{"kind", "result"})
	// Exchanges counts gateway exchanges: cache "hit", "miss" (minted) or
	// "refused".
	Exchanges = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "claimcheck_exchanges_total", Help: "Gateway exchanges by outcome: hit (cached token), miss (minted), refused.",
	}, []string{"result"})
	// HTTPRequests observes request durations by route, method and status.
	HTTPRequests = factory.NewHistogramVec(prometheus.HistogramOpts{
		Name: "claimcheck_http_request_duration_seconds", Help: "HTTP request durations by route pattern, method and status.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route", "method", "status"})
)

// StreamsOpen is the number of event streams and waiting long-polls.
var StreamsOpen = factory.NewGauge(prometheus.GaugeOpts{
	Name: "claimcheck_event_streams_open", Help: "Event streams and long-polls waiting in this process.",
})

// StreamsRefused counts event streams and long-polls refused (429) because
// a cap was reached, by which one: "token" (per jti), "job" or "address".
var StreamsRefused = factory.NewCounterVec(prometheus.CounterOpts{
	Name: "claimcheck_event_streams_refused_total", Help: "Event streams and long-polls refused at a cap, by cap (token, job, address).",
}, []string{"reason"})

// StreamsEnded counts event streams the server ended before their job did,
// by reason: "token_expired" or "token_revoked".
var StreamsEnded = factory.NewCounterVec(prometheus.CounterOpts{
	Name: "claimcheck_event_streams_ended_total", Help: "Event streams ended by the server before their job ended, by reason (token_expired, token_revoked).",
}, []string{"reason"})

// Queues registers a collector reporting each Asynq queue's depth by task
// state and its latency (age of the oldest pending task), read from Redis
// on each scrape. Call it once per process.
func Queues(inspector *asynq.Inspector) error {
	return Registry.Register(&queueCollector{insp: inspector})
}

var (
	queueSizeDesc    = prometheus.NewDesc("claimcheck_queue_tasks", "Tasks in an Asynq queue by state.", []string{"queue", "state"}, nil)
	queueLatencyDesc = prometheus.NewDesc("claimcheck_queue_latency_seconds", "Age of the oldest pending task in an Asynq queue.", []string{"queue"}, nil)
)

type queueCollector struct{ insp *asynq.Inspector }

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueSizeDesc
	ch <- queueLatencyDesc
}

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	queues, err := q.insp.Queues()
	if err != nil {
		return
	}
	for _, name := range queues {
		info, err := q.insp.GetQueueInfo(name)
		if err != nil {
			continue
		}
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed} {
			ch <- prometheus.MustNewConstMetric(queueSizeDesc, prometheus.GaugeValue, float64(n), name, state)
		}
		ch <- prometheus.MustNewConstMetric(queueLatencyDesc, prometheus.GaugeValue, info.Latency.Seconds(), name)
	}
}

// WorkersPaused is how many workers of this process have stopped taking
// jobs because their results store cannot take results, by reason:
// "not_writable" or "low_space" (worker/health.go).
var WorkersPaused = factory.NewGaugeVec(prometheus.GaugeOpts{
	Name: "claimcheck_worker_paused", Help: "Workers that stopped taking jobs because their results store cannot take results, by reason (not_writable, low_space).",
}, []string{"reason"})

// ResultsFreeBytes is the free space of the results store's file system
// at a worker's last health check.
var ResultsFreeBytes = factory.NewGauge(prometheus.GaugeOpts{
	Name: "claimcheck_results_free_bytes", Help: "Free space of the results store's file system at the worker's last check.",
})

// WebhookDeliveries counts webhook delivery attempts by event (started,
// progress, log, completed) and outcome (delivered, retrying, failed,
// dropped). The webhook queue's depth is claimcheck_queue_tasks{queue="cc.webhooks"}.
var WebhookDeliveries = factory.NewCounterVec(prometheus.CounterOpts{
	Name: "claimcheck_webhook_deliveries_total", Help: "Webhook delivery attempts by event and outcome (delivered, retrying, failed, dropped).",
}, []string{"event", "outcome"})

// WebhookDeliveryDuration observes how long webhook delivery attempts
// that were sent took, by event.
var WebhookDeliveryDuration = factory.NewHistogramVec(prometheus.HistogramOpts{
	Name: "claimcheck_webhook_delivery_duration_seconds", Help: "Durations of webhook delivery attempts that were sent, by event.",
	Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
}, []string{"event"})
