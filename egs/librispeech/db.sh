# Where the corpora live. LIBRISPEECH: the directory holding train-clean-100/, dev-clean/, ...
# (as downloaded from openslr.org/12). Empty: run.sh synthesizes the built-in corpus
# (db/LibriSynth, LibriSpeech's layout) and uses that. The environment may set it.
LIBRISPEECH=${LIBRISPEECH:-}
