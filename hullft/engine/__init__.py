"""The finetune engine: one optimizer step per multiset element, Gradient Reuse, bit-exact reset.

    finetune.py      FinetuneEngine: the step loop, checkpoints, reset (knows nothing of selection)
    train_steps.py   the step protocol and its eager implementation
    compiled.py      the same steps with the model's forward/backward compiled (CPU)
    cuda_graphs.py   the same steps, and scoring windows, replayed as CUDA graphs
"""
