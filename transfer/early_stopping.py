"""Early stopping as in the seeds: stop when the epoch's mean validation loss has not improved by more
than `eps` for `patience` epochs; the best weights are kept so they can be restored on any exit."""
import copy


class EarlyStopping:
    def __init__(self, patience, eps=1e-4):
        self.patience, self.eps = patience, eps
        self.best, self.best_epoch, self.bad_epochs, self.best_state = float("inf"), -1, 0, None
        self.fired = False

    def step(self, epoch, val_loss, model):
        """Record one epoch; returns True when training should stop."""
        if val_loss < self.best - self.eps:
            self.best, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.fired = True
        return self.fired

    def restore(self, model):
        """Load the best weights seen (whether or not stopping fired)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self):
        return dict(best=self.best, best_epoch=self.best_epoch, bad_epochs=self.bad_epochs, fired=self.fired)

    def load_state_dict(self, state, best_state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.fired = state["bad_epochs"], state["fired"]
        self.best_state = best_state
