# Config set "bench" (local/benchmark.py): the paper's comparison on a larger built-in
# corpus (the whole restricted-vocabulary phrase set, BPE units, a bigger upstream and
# longer training), so that the 32-bit model is good enough for the comparison to mean
# something. Written for a GPU (--ngpu 1); on 2 CPU cores it takes many hours.
# Its own working directory, so that it never mixes with the default run's exp/.
work=bench
num_train=6000
num_dev=300
num_test=300
token_type=bpe
nbpe=300
upstream_preset=small
upstream_args=""
train_overrides="max_epoch=30 batch_size=32"
