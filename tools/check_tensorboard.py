#!/usr/bin/env python3
"""Reads a strata run directory's TensorBoard event files with TensorBoard's own code.

    pip install tensorboard
    python3 tools/check_tensorboard.py RUN_DIR [--expect train/loss epoch/val_acc ...]

Two passes, both TensorBoard's: every record of every `*tfevents*` file goes through its record
reader (which checks the length and data CRC32C of each record and raises on a torn or corrupt
file) and is parsed as an `Event` protobuf; then `EventAccumulator`, what the TensorBoard server
uses, loads the directory and lists its scalar tags. Prints each tag with its number of points and
its last step and value. Exits 1 if a file cannot be read, if there are no scalars, or if a tag
given with --expect is missing.
"""

import argparse
import glob
import os
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory holding events.out.tfevents.* files")
    parser.add_argument("--expect", nargs="*", default=[], metavar="TAG", help="scalar tags that must be present")
    args = parser.parse_args()

    try:
        from tensorboard.backend.event_processing import event_accumulator
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.tensorflow_stub import errors
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
    except ImportError as e:
        print(f"error: {e}; install TensorBoard with `pip install tensorboard`", file=sys.stderr)
        return 1

    files = sorted(glob.glob(os.path.join(args.run_dir, "*tfevents*")))
    if not files:
        print(f"error: no *tfevents* file in {args.run_dir}", file=sys.stderr)
        return 1

    # Pass 1: every record, CRCs checked, parsed as an Event.
    for path in files:
        reader = PyRecordReader_New(path)
        records, version = 0, None
        while True:
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                break
            except errors.DataLossError as e:
                print(f"error: record {records + 1}: {e.message}", file=sys.stderr)
                return 1
            event = event_pb2.Event.FromString(reader.record())
            if records == 0:
                version = event.file_version
            records += 1
        if version != "brain.Event:2":
            print(f"error: {path}: first record has file_version {version!r}, not 'brain.Event:2'", file=sys.stderr)
            return 1
        print(f"{os.path.basename(path)}: {records} records, CRCs ok, {version}")

    # Pass 2: what TensorBoard shows.
    acc = event_accumulator.EventAccumulator(args.run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = sorted(acc.Tags().get(event_accumulator.SCALARS, []))
    if not tags:
        print(f"error: TensorBoard finds no scalars in {args.run_dir}", file=sys.stderr)
        return 1
    width = max(len(t) for t in tags)
    for tag in tags:
        points = acc.Scalars(tag)
        last = points[-1]
        print(f"{tag:<{width}}  {len(points):>6} points  last step {last.step:>7}  value {last.value:.6g}")
    missing = [t for t in args.expect if t not in tags]
    if missing:
        print(f"error: missing scalar tags: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
