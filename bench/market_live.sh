#!/usr/bin/env bash
# The whole market live (docs/BENCHMARKS.md, "The whole market"): the simulator serves
# 2,000 symbols re-labelled from the recorded BTCUSDT and ETHUSDT trades at 0.3x their
# pace (about 17,000 trades/s), the app watches ALL:USDT; the app's RSS every 30 s for
# 7 minutes, then /api/get_signal and /api/top latency under that load (Debian's wrk).
#   bash bench/market_live.sh
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd /tmp && rm -f /tmp/m.db*
"$ROOT/.venv/bin/spikewatch" simulate --market 2000 --quotes USDT --speed 0.3 --loop --port 19443 "$ROOT"/tests/fixtures/binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz "$ROOT"/tests/fixtures/binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz > /tmp/sim.log 2>&1 &
SIM=$!
sleep 4
"$ROOT/.venv/bin/python" "$ROOT/app.py" --symbols ALL:USDT --ws-url ws://127.0.0.1:19443 --rest-url http://127.0.0.1:19443 --port 15000 --db /tmp/m.db > /tmp/app.log 2>&1 &
APP=$!
T0=$(date +%s)
for i in $(seq 1 14); do
  sleep 30
  T=$(( $(date +%s) - T0 ))
  RSS=$(grep VmRSS /proc/$APP/status | awk '{print $2}')
  TR=$(curl -s localhost:15000/api/status | python3 -c "import json,sys; d=json.load(sys.stdin); print(sum(s['trades'] for s in d['symbols'].values()), len(d['symbols']), d['connection']['state'])")
  echo "t=${T}s rss_kb=$RSS trades/symbols/state=$TR"
done
wrk -t1 -c4 -d20s --latency http://127.0.0.1:15000/api/get_signal
curl -s "localhost:15000/api/top?window=5m&limit=5" | head -c 600; echo
wrk -t1 -c2 -d10s --latency "http://127.0.0.1:15000/api/top?window=5m"
kill $APP; sleep 2; kill $SIM
