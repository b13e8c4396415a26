# How run.sh starts its jobs: "$train_cmd LOG python ..." and "$decode_cmd LOG python ...".
# Default: here, on this machine (utils/run_local.sh writes the job's output to LOG).
export train_cmd="utils/run_local.sh"
export decode_cmd="utils/run_local.sh"

# Slurm (a cluster; the recipe directory on a shared file system): run each job as a
# Slurm step on a node with the resources it needs, e.g.
#   export train_cmd="srun --gres=gpu:1 --cpus-per-task=8 --mem=32G --time=24:00:00 utils/run_local.sh"
#   export decode_cmd="srun --cpus-per-task=2 --mem=8G --time=4:00:00 utils/run_local.sh"
# and give run.sh --ngpu 1 for training on the GPU.
