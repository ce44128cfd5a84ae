#!/usr/bin/env bash
# The whole market live (docs/BENCHMARKS.md, "The whole market"): the simulator serves
# 2,000 symbols re-labelled from the recorded BTCUSDT and ETHUSDT trades at 0.3x their
# pace (about 17,000 trades/s), the app watches ALL:USDT; the app's RSS every 30 s for
# 7 minutes, then /api/get_signal and /api/top latency under that load (Debian's wrk).
#   bash bench/market_live.sh
#   MINUTES=4 SPEED=0.3 SIM_PORT=19443 APP_PORT=15000 WRK=0 bash bench/market_live.sh
# MINUTES: how long RSS is sampled; WRK=0 skips the latency part; the ports let two runs
# share a machine. Besides VmRSS each line shows the signals stored so far and the
# process's anonymous memory (heap and arenas: what the app itself holds).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MINUTES="${MINUTES:-7}"
SPEED="${SPEED:-0.3}"
SIM_PORT="${SIM_PORT:-19443}"
APP_PORT="${APP_PORT:-15000}"
WRK="${WRK:-1}"
DB="/tmp/market-live-$APP_PORT.db"
cd /tmp && rm -f "$DB"*
"$ROOT/.venv/bin/spikewatch" simulate --market 2000 --quotes USDT --speed "$SPEED" --loop --port "$SIM_PORT" "$ROOT"/tests/fixtures/binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz "$ROOT"/tests/fixtures/binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz > "/tmp/sim-$SIM_PORT.log" 2>&1 &
SIM=$!
sleep 4
"$ROOT/.venv/bin/python" "$ROOT/app.py" --symbols ALL:USDT --ws-url "ws://127.0.0.1:$SIM_PORT" --rest-url "http://127.0.0.1:$SIM_PORT" --port "$APP_PORT" --db "$DB" > "/tmp/app-$APP_PORT.log" 2>&1 &
APP=$!
T0=$(date +%s)
for i in $(seq 1 $(( MINUTES * 2 ))); do
  sleep 30
  T=$(( $(date +%s) - T0 ))
  RSS=$(grep VmRSS /proc/$APP/status | awk '{print $2}')
  ANON=$(grep '^Anonymous' /proc/$APP/smaps_rollup | awk '{print $2}')
  SIGNALS=$(curl -s "localhost:$APP_PORT/metrics" | awk '/^spikewatch_signals_total/ {s += $2} END {print s + 0}')
  TR=$(curl -s "localhost:$APP_PORT/api/status" | python3 -c "import json,sys; d=json.load(sys.stdin); print(sum(s['trades'] for s in d['symbols'].values()), len(d['symbols']), d['connection']['state'])")
  echo "t=${T}s rss_kb=$RSS anon_kb=$ANON signals=$SIGNALS load=$(cut -d' ' -f1 /proc/loadavg) trades/symbols/state=$TR"
done
if [ "$WRK" != 0 ]; then
  wrk -t1 -c4 -d20s --latency "http://127.0.0.1:$APP_PORT/api/get_signal"
  curl -s "localhost:$APP_PORT/api/top?window=5m&limit=5" | head -c 600; echo
  wrk -t1 -c2 -d10s --latency "http://127.0.0.1:$APP_PORT/api/top?window=5m"
fi
kill $APP; sleep 2; kill $SIM
