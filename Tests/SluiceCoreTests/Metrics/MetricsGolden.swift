@testable import SluiceCore

/// The whole `/metrics` text `MetricsRegistryTests.sampleRegistry()` renders, kept apart from the tests that read it.
extension MetricsRegistryTests {
    static let golden = #"""
# HELP sluice_requests_total Finished requests by route prefix and class of the status sent (none: no response).
# TYPE sluice_requests_total counter
sluice_requests_total{route="/v1/chat",code_class="1xx"} 0
sluice_requests_total{route="/v1/chat",code_class="2xx"} 2
sluice_requests_total{route="/v1/chat",code_class="3xx"} 0
sluice_requests_total{route="/v1/chat",code_class="4xx"} 0
sluice_requests_total{route="/v1/chat",code_class="5xx"} 0
sluice_requests_total{route="/v1/chat",code_class="none"} 0
sluice_requests_total{route="/we\"ird\\\n",code_class="1xx"} 0
sluice_requests_total{route="/we\"ird\\\n",code_class="2xx"} 0
sluice_requests_total{route="/we\"ird\\\n",code_class="3xx"} 0
sluice_requests_total{route="/we\"ird\\\n",code_class="4xx"} 0
sluice_requests_total{route="/we\"ird\\\n",code_class="5xx"} 1
sluice_requests_total{route="/we\"ird\\\n",code_class="none"} 0
sluice_requests_total{route="none",code_class="1xx"} 0
sluice_requests_total{route="none",code_class="2xx"} 0
sluice_requests_total{route="none",code_class="3xx"} 0
sluice_requests_total{route="none",code_class="4xx"} 0
sluice_requests_total{route="none",code_class="5xx"} 0
sluice_requests_total{route="none",code_class="none"} 1
# HELP sluice_exchanges_total Finished exchanges by how they ended.
# TYPE sluice_exchanges_total counter
sluice_exchanges_total{end="complete"} 2
sluice_exchanges_total{end="client_abort"} 1
sluice_exchanges_total{end="upstream_abort"} 0
sluice_exchanges_total{end="upstream_error"} 1
sluice_exchanges_total{end="timeout_connect"} 0
sluice_exchanges_total{end="timeout_first_byte"} 0
sluice_exchanges_total{end="timeout_idle"} 0
sluice_exchanges_total{end="timeout_total"} 0
sluice_exchanges_total{end="client_write_timeout"} 0
sluice_exchanges_total{end="rejected_rate_limit"} 0
sluice_exchanges_total{end="rejected_bad_request"} 0
sluice_exchanges_total{end="drain"} 0
sluice_exchanges_total{end="rejected_overload"} 0
sluice_exchanges_total{end="upstream_unresolved"} 0
sluice_exchanges_total{end="tunnel_client_closed"} 0
sluice_exchanges_total{end="tunnel_upstream_closed"} 0
sluice_exchanges_total{end="tunnel_idle_timeout"} 0
# HELP sluice_tunnels_active WebSocket tunnels open now.
# TYPE sluice_tunnels_active gauge
sluice_tunnels_active 0
# HELP sluice_tunnel_bytes_total Bytes relayed through WebSocket tunnels after the 101, by direction.
# TYPE sluice_tunnel_bytes_total counter
sluice_tunnel_bytes_total{direction="client_to_upstream"} 0
sluice_tunnel_bytes_total{direction="upstream_to_client"} 0
# HELP sluice_tunnel_ends_total Finished WebSocket tunnels by how they ended.
# TYPE sluice_tunnel_ends_total counter
sluice_tunnel_ends_total{end="client_abort"} 0
sluice_tunnel_ends_total{end="upstream_abort"} 0
sluice_tunnel_ends_total{end="client_write_timeout"} 0
sluice_tunnel_ends_total{end="drain"} 0
sluice_tunnel_ends_total{end="tunnel_client_closed"} 0
sluice_tunnel_ends_total{end="tunnel_upstream_closed"} 0
sluice_tunnel_ends_total{end="tunnel_idle_timeout"} 0
# HELP sluice_client_bytes_received_total Bytes read from clients.
# TYPE sluice_client_bytes_received_total counter
sluice_client_bytes_received_total 150
# HELP sluice_client_bytes_sent_total Bytes written to clients.
# TYPE sluice_client_bytes_sent_total counter
sluice_client_bytes_sent_total 1000
# HELP sluice_upstream_bytes_received_total Bytes read from upstreams.
# TYPE sluice_upstream_bytes_received_total counter
sluice_upstream_bytes_received_total 990
# HELP sluice_upstream_bytes_sent_total Bytes written to upstreams.
# TYPE sluice_upstream_bytes_sent_total counter
sluice_upstream_bytes_sent_total 120
# HELP sluice_rate_limit_rejections_total Requests rejected by each rate-limit rule.
# TYPE sluice_rate_limit_rejections_total counter
sluice_rate_limit_rejections_total{rule="per-key"} 1
# HELP sluice_backpressure_pauses_total Times reads from an upstream were paused because the client was slower.
# TYPE sluice_backpressure_pauses_total counter
sluice_backpressure_pauses_total 1
# HELP sluice_connections_refused_total Client connections answered 503 because max_connections were open.
# TYPE sluice_connections_refused_total counter
sluice_connections_refused_total 0
# HELP sluice_connections_evicted_total Idle client connections closed to make room for a new one because max_connections were open.
# TYPE sluice_connections_evicted_total counter
sluice_connections_evicted_total 0
# HELP sluice_upstream_retries_total Requests sent again before any response byte: on a fresh connection to the same server after a pooled one was found closed (reason replay, over all upstreams), or to another server of the upstream after a retry_on failure (reason connect_error, reset or the status).
# TYPE sluice_upstream_retries_total counter
sluice_upstream_retries_total{reason="replay"} 0
# HELP sluice_generated_responses_total Responses sluice generated instead of forwarding one, by whose fault: client (4xx), upstream (502, 504) or internal (503).
# TYPE sluice_generated_responses_total counter
sluice_generated_responses_total{source="client"} 0
sluice_generated_responses_total{source="upstream"} 0
sluice_generated_responses_total{source="internal"} 0
# HELP sluice_active_connections Open client connections.
# TYPE sluice_active_connections gauge
sluice_active_connections 2
# HELP sluice_active_streams Responses being streamed to clients.
# TYPE sluice_active_streams gauge
sluice_active_streams 1
# HELP sluice_queued_bytes Bytes queued in sluice waiting for a slow peer.
# TYPE sluice_queued_bytes gauge
sluice_queued_bytes 4096
# HELP sluice_log_records_written_total Completion records written to every log sink.
# TYPE sluice_log_records_written_total counter
sluice_log_records_written_total 0
# HELP sluice_log_records_dropped_total Completion records dropped because the log queue was full.
# TYPE sluice_log_records_dropped_total counter
sluice_log_records_dropped_total 1
# HELP sluice_ttfb_seconds Time from forwarding the request to receiving the upstream's response head.
# TYPE sluice_ttfb_seconds histogram
sluice_ttfb_seconds_bucket{le="0.005"} 1
sluice_ttfb_seconds_bucket{le="0.01"} 1
sluice_ttfb_seconds_bucket{le="0.025"} 1
sluice_ttfb_seconds_bucket{le="0.05"} 2
sluice_ttfb_seconds_bucket{le="0.1"} 2
sluice_ttfb_seconds_bucket{le="0.25"} 2
sluice_ttfb_seconds_bucket{le="0.5"} 2
sluice_ttfb_seconds_bucket{le="1"} 2
sluice_ttfb_seconds_bucket{le="2.5"} 2
sluice_ttfb_seconds_bucket{le="5"} 2
sluice_ttfb_seconds_bucket{le="10"} 2
sluice_ttfb_seconds_bucket{le="30"} 2
sluice_ttfb_seconds_bucket{le="60"} 2
sluice_ttfb_seconds_bucket{le="120"} 2
sluice_ttfb_seconds_bucket{le="300"} 2
sluice_ttfb_seconds_bucket{le="600"} 2
sluice_ttfb_seconds_bucket{le="+Inf"} 3
sluice_ttfb_seconds_sum 700.043
sluice_ttfb_seconds_count 3
# HELP sluice_ttfe_seconds Time from forwarding the request to the first SSE data event.
# TYPE sluice_ttfe_seconds histogram
sluice_ttfe_seconds_bucket{le="0.005"} 0
sluice_ttfe_seconds_bucket{le="0.01"} 0
sluice_ttfe_seconds_bucket{le="0.025"} 0
sluice_ttfe_seconds_bucket{le="0.05"} 0
sluice_ttfe_seconds_bucket{le="0.1"} 0
sluice_ttfe_seconds_bucket{le="0.25"} 0
sluice_ttfe_seconds_bucket{le="0.5"} 0
sluice_ttfe_seconds_bucket{le="1"} 0
sluice_ttfe_seconds_bucket{le="2.5"} 0
sluice_ttfe_seconds_bucket{le="5"} 0
sluice_ttfe_seconds_bucket{le="10"} 0
sluice_ttfe_seconds_bucket{le="30"} 0
sluice_ttfe_seconds_bucket{le="60"} 0
sluice_ttfe_seconds_bucket{le="120"} 0
sluice_ttfe_seconds_bucket{le="300"} 0
sluice_ttfe_seconds_bucket{le="600"} 0
sluice_ttfe_seconds_bucket{le="+Inf"} 0
sluice_ttfe_seconds_sum 0
sluice_ttfe_seconds_count 0
# HELP sluice_ttft_seconds Time from forwarding the request to the first output (a content-bearing SSE event or a body's first byte), by route and model.
# TYPE sluice_ttft_seconds histogram
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="0.005"} 0
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="0.01"} 0
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="0.025"} 0
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="0.05"} 0
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="0.1"} 0
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="0.25"} 0
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="0.5"} 0
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="1"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="2.5"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="5"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="10"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="30"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="60"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="120"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="300"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="600"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="gpt-4o",le="+Inf"} 1
sluice_ttft_seconds_sum{route="/v1/chat",model="gpt-4o"} 0.50025
sluice_ttft_seconds_count{route="/v1/chat",model="gpt-4o"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="0.005"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="0.01"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="0.025"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="0.05"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="0.1"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="0.25"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="0.5"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="1"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="2.5"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="5"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="10"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="30"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="60"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="120"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="300"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="600"} 1
sluice_ttft_seconds_bucket{route="/v1/chat",model="none",le="+Inf"} 1
sluice_ttft_seconds_sum{route="/v1/chat",model="none"} 0.003
sluice_ttft_seconds_count{route="/v1/chat",model="none"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="0.005"} 0
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="0.01"} 0
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="0.025"} 0
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="0.05"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="0.1"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="0.25"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="0.5"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="1"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="2.5"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="5"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="10"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="30"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="60"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="120"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="300"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="600"} 1
sluice_ttft_seconds_bucket{route="/we\"ird\\\n",model="m\"x\\",le="+Inf"} 1
sluice_ttft_seconds_sum{route="/we\"ird\\\n",model="m\"x\\"} 0.04
sluice_ttft_seconds_count{route="/we\"ird\\\n",model="m\"x\\"} 1
# HELP sluice_prompt_tokens_total Prompt tokens the upstream reported, by route and model.
# TYPE sluice_prompt_tokens_total counter
sluice_prompt_tokens_total{route="/v1/chat",model="gpt-4o"} 25
sluice_prompt_tokens_total{route="/v1/chat",model="none"} 0
sluice_prompt_tokens_total{route="/we\"ird\\\n",model="m\"x\\"} 1
# HELP sluice_completion_tokens_total Completion tokens the upstream reported, by route and model.
# TYPE sluice_completion_tokens_total counter
sluice_completion_tokens_total{route="/v1/chat",model="gpt-4o"} 158
sluice_completion_tokens_total{route="/v1/chat",model="none"} 0
sluice_completion_tokens_total{route="/we\"ird\\\n",model="m\"x\\"} 2
# HELP sluice_duration_seconds Duration of exchanges, from the request to the end of the response.
# TYPE sluice_duration_seconds histogram
sluice_duration_seconds_bucket{le="0.005"} 1
sluice_duration_seconds_bucket{le="0.01"} 1
sluice_duration_seconds_bucket{le="0.025"} 1
sluice_duration_seconds_bucket{le="0.05"} 1
sluice_duration_seconds_bucket{le="0.1"} 1
sluice_duration_seconds_bucket{le="0.25"} 1
sluice_duration_seconds_bucket{le="0.5"} 1
sluice_duration_seconds_bucket{le="1"} 1
sluice_duration_seconds_bucket{le="2.5"} 2
sluice_duration_seconds_bucket{le="5"} 2
sluice_duration_seconds_bucket{le="10"} 2
sluice_duration_seconds_bucket{le="30"} 2
sluice_duration_seconds_bucket{le="60"} 2
sluice_duration_seconds_bucket{le="120"} 2
sluice_duration_seconds_bucket{le="300"} 2
sluice_duration_seconds_bucket{le="600"} 2
sluice_duration_seconds_bucket{le="+Inf"} 2
sluice_duration_seconds_sum 1.505
sluice_duration_seconds_count 2
# HELP sluice_event_gap_seconds Time between consecutive SSE events of a response.
# TYPE sluice_event_gap_seconds histogram
sluice_event_gap_seconds_bucket{le="0.001"} 1
sluice_event_gap_seconds_bucket{le="0.0025"} 1
sluice_event_gap_seconds_bucket{le="0.005"} 1
sluice_event_gap_seconds_bucket{le="0.01"} 1
sluice_event_gap_seconds_bucket{le="0.025"} 2
sluice_event_gap_seconds_bucket{le="0.05"} 2
sluice_event_gap_seconds_bucket{le="0.1"} 2
sluice_event_gap_seconds_bucket{le="0.25"} 2
sluice_event_gap_seconds_bucket{le="0.5"} 2
sluice_event_gap_seconds_bucket{le="1"} 2
sluice_event_gap_seconds_bucket{le="2.5"} 2
sluice_event_gap_seconds_bucket{le="5"} 2
sluice_event_gap_seconds_bucket{le="10"} 2
sluice_event_gap_seconds_bucket{le="30"} 2
sluice_event_gap_seconds_bucket{le="60"} 2
sluice_event_gap_seconds_bucket{le="+Inf"} 2
sluice_event_gap_seconds_sum 0.0205
sluice_event_gap_seconds_count 2
# HELP sluice_upstream_server_streams Streams in flight to each server of an upstream pool, from every worker.
# TYPE sluice_upstream_server_streams gauge
# HELP sluice_upstream_server_up 1 while a server takes new streams; 0 while it is ejected after failures or failing its health check.
# TYPE sluice_upstream_server_up gauge
# HELP sluice_upstream_server_responses_total Final response heads from each server, by status class; one that was then retried on another server (a 503) counts too.
# TYPE sluice_upstream_server_responses_total counter
# HELP sluice_upstream_server_failures_total Failures traffic saw on each server: a connect that failed or timed out, a close or reset before the response head, a first-byte timeout, a 5xx or a 429.
# TYPE sluice_upstream_server_failures_total counter
# HELP sluice_upstream_server_ejections_total Times each server was taken out of use: ejected after max_fails failures within fail_window, or by the first of a run of failed health checks.
# TYPE sluice_upstream_server_ejections_total counter
# HELP sluice_upstream_server_ttft_seconds Time from the start of a try on a server (its connect, or taking a pooled connection) to its final response head.
# TYPE sluice_upstream_server_ttft_seconds histogram
# HELP sluice_affinity_total Requests to upstreams with affinity: sent to the first available server in the key's order (hit), to a later one because that one was over the load bound (spill), or balanced for want of a key (nokey).
# TYPE sluice_affinity_total counter
# HELP sluice_upstream_panic_total Requests sent to a server while none of the upstream was available (panic mode: every server taken as healthy).
# TYPE sluice_upstream_panic_total counter
# HELP sluice_upstream_retries_refused_total Retries retry_on allowed but the upstream's retry budget (retry_ratio) did not: the client got the failure.
# TYPE sluice_upstream_retries_refused_total counter
# HELP sluice_build_info Always 1; the labels say which sluice this is.
# TYPE sluice_build_info gauge
sluice_build_info{version="0.1.0",commit="abc1234"} 1
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.25
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 10485760
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 268435456
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 12
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds 1048576
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1735689600.37

"""#
}
