"""The interface between the training loop (vitfast/training/loop.py) and a training method: what an objective
changes lives in one object, and the loop, one loop for every method, calls its hooks."""
import os


class Method:
    """One training objective. The loop calls, in its order:

    train_transform(img_size, norm)  while the data is built: the training images' transform (None:
                          the supervised one); a method of several views makes them here.
    prepare(model, run)   once the model is built and on its device (run: num_classes, img_size, device,
                          dist, data, total_steps, steps_per_epoch, say): build what the method holds (an
                          EMA, a teacher, heads); returns the module the optimizer trains and DDP wraps.
    held()                the modules with weights the method holds besides prepare's (an EMA, a teacher):
                          sharded under --fsdp as the trained module is.
    views(x, y)           a micro-batch as the loader gives it -> what loss() takes (mixup; crops).
    loss(trained, x, y, step)  the scalar loss, under the loop's autocast; `trained` is prepare's module
                          as the loop runs it (wrapped in DDP or compiled).
    before_step(step, optimizer)  gradients ready (clipped, and unscaled where clipping is on), before
                          the optimizer step.
    after_step(step)      after each optimizer step (an EMA, a teacher's momentum update).
    state()               what a checkpoint carries besides the model, optimizer and scaler, as top-level
                          keys; load_state(checkpoint) restores it.
    diverged()            what the stop on an inf/NaN loss adds to its line: the method's known remedies.
    reported / weights    the module that is validated, saved as model.safetensors and quantized after
                          training, and which weights it holds ("ema" or "raw").
    validate(loader, ..., model=None)  {"acc1", "acc5", ...} of `reported` (or `model`, e.g. a quantized
                          copy of it) on the validation loader; "acc1" ranks checkpoints.
    scored / next_steps   what "acc1" is, and the commands the finished run's last lines suggest.
    """

    name = None
    scored = "validation top-1"

    def next_steps(self, out):
        """(label, command) lines the finished run at `out` prints last."""
        return [("evaluate", f"python -m vitfast.eval --checkpoint {os.path.join(out, 'model.safetensors')} "
                             "--quant fp32,bf16,int8")]

    def train_transform(self, img_size, norm):
        return None

    def prepare(self, model, run):
        raise NotImplementedError

    def held(self):
        return []

    def views(self, x, y):
        return x, y

    def loss(self, trained, x, y, step):
        raise NotImplementedError

    def before_step(self, step, optimizer):
        pass

    def after_step(self, step):
        pass

    def diverged(self):
        return ""

    def state(self):
        return {}

    def load_state(self, checkpoint):
        pass

    @property
    def reported(self):
        raise NotImplementedError

    @property
    def weights(self):
        return "raw"

    def validate(self, loader, device, amp_dtype, dist, desc="validation", model=None):
        raise NotImplementedError
