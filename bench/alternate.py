"""Times two commands alternately, several rounds in one go (so that both see the same machine state), and
prints each median and the ratio of the first to the second.

Usage: python3 bench/alternate.py ROUNDS NAME_A NAME_B -- COMMAND_A... -- COMMAND_B...
Output of the commands is discarded; a command that fails stops the comparison with its error output.
"""
import statistics
import subprocess
import sys
import time


def main(argv):
    rounds, name_a, name_b = int(argv[0]), argv[1], argv[2]
    rest = argv[3:]
    if not rest or rest[0] != "--" or "--" not in rest[1:]:
        sys.exit(__doc__)
    split = rest.index("--", 1)
    commands = {name_a: rest[1:split], name_b: rest[split + 1:]}
    times = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            started = time.perf_counter()
            result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            elapsed = time.perf_counter() - started
            if result.returncode != 0:
                sys.exit(f"{name} failed: {result.stderr.decode()[-2000:]}")
            times[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in times.items()}
    width = max(len(name) for name in medians)
    for name, median in medians.items():
        print(f"{name:{width}} median {median:.3f} s over {rounds} runs")
    print(f"ratio {name_a}/{name_b} (medians): {medians[name_a] / medians[name_b]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
