#!/usr/bin/env bash
# The scale-out walkthrough on one machine (README "Outgrowing one machine"): the simulator,
# 3 collectors -> Kafka topic `trades` (6 partitions, keyed by symbol) -> 2 strategies in one
# consumer group -> ClickHouse table `trades`. Needs Kafka on 127.0.0.1:9092 and ClickHouse on
# 127.0.0.1:9000 (`make services`). Ctrl-C stops everything.
#
# Try: kill -9 one collector or strategy (their pids are printed), start it again with the
# same line, and compare what Kafka holds with what ClickHouse recorded:
#   dial exec 'clickhouse://tcp://127.0.0.1:9000' \
#     'SELECT run, count(), uniqExact(partition, offset) FROM trades GROUP BY run'
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
KAFKA=${KAFKA:-kafka://127.0.0.1:9092/trades}
CLICKHOUSE=${CLICKHOUSE:-clickhouse://tcp://127.0.0.1:9000?database=default}
SIM=${SIM:-8765}  # Binance on 8765, OKX on 8766, HTX on 8767

pids=()
# stop in reverse order: collectors first (they flush into Kafka), strategies, the simulator last
trap 'for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; sleep 0.3; done; wait' EXIT INT TERM
start() { "$@" & pids+=($!); echo "pid $! : $*"; }

start "$PY" -m dial.cli simulate all --port "$SIM" --rate 10
"$PY" examples/scale_out/topic.py "$KAFKA" --partitions 6
sleep 1

for name in s1 s2; do
  start "$PY" examples/scale_out/strategy.py --name "$name" --kafka "$KAFKA" \
    --group strategies --clickhouse "$CLICKHOUSE" --table trades
done

OKX_SUB='{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},{"channel":"trades","instId":"ETH-USDT"},{"channel":"trades","instId":"SOL-USDT"}]}'
start "$PY" -m dial.cli pipe "ws://127.0.0.1:$SIM/ws/btcusdt@trade/ethusdt@trade/solusdt@trade" "$KAFKA" --key s --quiet
start "$PY" -m dial.cli pipe "ws://127.0.0.1:$SIM/ws/bnbusdt@trade/xrpusdt@trade/dogeusdt@trade" "$KAFKA" --key s --quiet
start "$PY" -m dial.cli pipe "ws://127.0.0.1:$((SIM + 1))/ws/v5/public|payload=$OKX_SUB" "$KAFKA" --key data.0.instId --quiet
wait
