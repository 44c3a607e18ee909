#!/bin/sh
# Makes rvoip's prompts: speech synthesised with espeak-ng, converted by sox
# to 8 kHz mono 16-bit WAV (what a G.711 call carries; the media server
# resamples for wideband codecs), and the music on hold, a chord sequence
# synthesised by sox. Run from anywhere: `sh prompts/make.sh`. Needs the
# Debian packages espeak-ng and sox. The output is committed, so building or
# testing rvoip does not need them.
#
# Licence: the texts and this script are rvoip's own (Apache-2.0, as the
# rest of the repository); the audio is synthesised by espeak-ng (GPL-3) as
# its output, which carries no licence of its own.
set -eu
cd "$(dirname "$0")"
say() {
    espeak-ng -v en-us -s 150 -a 120 -w "$1.tmp.wav" "$2"
    sox "$1.tmp.wav" -r 8000 -c 1 -b 16 "$1.wav" norm -6
    rm -f "$1.tmp.wav"
}
say welcome "Welcome to r voip. Press 1 to join the conference. Press 2 for the echo test."
say busy "The number you called is busy. Please try again later."
say unavailable "The number you called is not available. Please try again later."
say invalid "That is not a valid choice."
# Music on hold: eight seconds of slow chords, gently faded.
sox -n -r 8000 -c 1 -b 16 moh.wav \
    synth 2 pluck C4 pluck E4 pluck G4 : synth 2 pluck A3 pluck C4 pluck E4 : \
    synth 2 pluck F3 pluck A3 pluck C4 : synth 2 pluck G3 pluck B3 pluck D4 \
    norm -12 fade 0.1 8 0.5
ls -l ./*.wav
