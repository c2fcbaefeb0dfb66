#!/usr/bin/env bash
# Run the Eclipse Paho MQTT interoperability suite (repository eclipse/paho.mqtt.testing,
# interoperability/client_test.py for MQTT 3.1.1 and client_test5.py for MQTT 5.0) against
# a broker at HOST:PORT, and print one summary line per suite.
#
#   tests/interop/paho.sh HOST PORT [SUITE_DIR]
#
# SUITE_DIR is a checkout of that repository (or of its interoperability/ folder); default
# $PAHO_TESTING_DIR. The suite is not part of this project and is never copied into it.
# Each test runs in a process of its own, bounded by PAHO_TEST_TIMEOUT seconds (default
# 90): a test that hangs against one broker is counted as failed and the rest still run.
# Each test's class setup cleans the broker's retained messages and the test clients'
# sessions first, as the suite does.
#
# Output: one line per test (ok / FAIL / ERROR / TIMEOUT), the failures' reports, then
#   paho-3.1.1: N run, N passed, N failed
#   paho-5.0: N run, N passed, N failed
# Exit status 0 when both suites ran (failures included), 2 on bad arguments.
set -u

if [ $# -lt 2 ]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
HOST=$1
PORT=$2
SUITE=${3:-${PAHO_TESTING_DIR:-}}
if [ -z "$SUITE" ]; then
    echo "paho.sh: give the suite's directory as the third argument or in PAHO_TESTING_DIR" >&2
    exit 2
fi
if [ -d "$SUITE/interoperability" ]; then
    SUITE=$SUITE/interoperability
fi
if [ ! -f "$SUITE/client_test.py" ] || [ ! -f "$SUITE/client_test5.py" ]; then
    echo "paho.sh: no client_test.py and client_test5.py in $SUITE" >&2
    exit 2
fi
PYTHON=${PYTHON:-python3}
TEST_TIMEOUT=${PAHO_TEST_TIMEOUT:-90}
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT

# Runs one test (or, with LIST, prints the test names) of a suite module, with the globals
# its __main__ block would have set from the command line.
RUNNER='
import importlib, logging, sys, unittest
host, port, module_name, prefix, test = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
sys.argv = [module_name]
logging.getLogger().setLevel(logging.CRITICAL)
module = importlib.import_module(module_name)
module.host, module.port, module.topic_prefix = host, port, prefix
module.topics = [prefix + t for t in ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")]
module.wildtopics = [prefix + t for t in
                     ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")]
module.nosubscribe_topics = ("test/nosubscribe",)
if test == "LIST":
    print("\n".join(unittest.defaultTestLoader.getTestCaseNames(module.Test)))
    sys.exit(0)
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=0).run(
    unittest.defaultTestLoader.loadTestsFromName("Test." + test, module))
sys.exit(0 if result.wasSuccessful() else 1)
'

run_suite() {  # module label topic-prefix
    local module=$1 label=$2 prefix=$3 run=0 passed=0 name status verdict
    local names
    names=$(cd "$SUITE" && "$PYTHON" -c "$RUNNER" "$HOST" "$PORT" "$module" "$prefix" LIST)
    for name in $names; do
        run=$((run + 1))
        (cd "$SUITE" && timeout "$TEST_TIMEOUT" "$PYTHON" -c "$RUNNER" "$HOST" "$PORT" \
            "$module" "$prefix" "$name") > "$LOG/$label.$name.txt" 2>&1
        status=$?
        if [ $status -eq 0 ]; then
            passed=$((passed + 1))
            verdict=ok
        elif [ $status -eq 124 ]; then
            verdict="TIMEOUT (${TEST_TIMEOUT}s)"
        else
            verdict=FAIL
        fi
        echo "$label $name ... $verdict"
        if [ "$verdict" != ok ]; then
            grep -E "Error|assert|Exception" "$LOG/$label.$name.txt" | tail -3 | sed 's/^/    /'
        fi
    done
    echo "$label: $run run, $passed passed, $((run - passed)) failed" >> "$LOG/summary"
}

run_suite client_test paho-3.1.1 ""
run_suite client_test5 paho-5.0 "client_test5/"
echo
cat "$LOG/summary"
