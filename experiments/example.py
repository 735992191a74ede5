"""Example experiment: three variants of the built-in CNN on the built-in `demo` dataset.

Run it with `xval run experiments/example.py` (all instances) or `xval run experiments/example.py 2 3`.
Every name below is read by xvalkit; instance parameters are 'name=value' strings parsed as
Python literals (never executed). Defaults come from config.ini [training] and from the model
function (see `xval` README, "Parameters").
"""

short_description = "Demo: the example CNN on synthetic vowels, three regularisation strengths"
dataset = "demo"  # built in: synthesised on first use into the data folder
num_experiment = 1
num_folds = 4  # grouped k-fold: the 8 synthetic speakers are the foldable items
experiment_folder = "../results"  # relative to this file
overwrite_results = False  # False: a rerun skips finished folds (resume); True: redo them
debug_mode = False  # True: stop at the first error with a full traceback
task_type = "classification"
generator = False  # True: feed batches straight from the per-speaker arrays
gpu_ID = 0  # ignored when no GPU is visible; `--gpu N` or `--cpu` overrides it

global_parameters = ['num_epochs=15', 'patience=4', 'batch_size=32']

experiment = {}
experiment[1] = ['architecture="EXAMPLE_model"', 'reshaping_type="cnn"', 'comment_1="reg 0.001"',
                 'comment_2="EXAMPLE_architecture"', 'regularization_lambda="0.001"']
experiment[2] = ['architecture="EXAMPLE_model"', 'reshaping_type="cnn"', 'comment_1="reg 0.01"',
                 'comment_2="EXAMPLE_architecture"', 'regularization_lambda=0.01']
experiment[3] = ['architecture="EXAMPLE_model"', 'reshaping_type="cnn"', 'comment_1="reg 0.01, lr 0.003"',
                 'comment_2="EXAMPLE_architecture"', 'regularization_lambda=0.01', 'learning_rate=0.003']
