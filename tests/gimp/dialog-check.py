#!/usr/bin/env python3
"""Drives one of the plug-in's dialogs through the accessibility bus.

    dialog-check.py [--timeout S] STEP...

Waits for the application "ddim-inversion" to show a dialog, then runs the
steps in order; exit status 1 (with "CHECK FAILED: ...") when one fails.
Steps (LABEL is the text of a control's label, as "Strength"):
  title=TEXT           the dialog's name is TEXT
  has-item=LABEL:TEXT  the drop-down LABEL has an entry that starts with TEXT
  current=LABEL:TEXT   the drop-down LABEL shows an entry that starts with
                       TEXT (for GIMP's own drop-downs: the choice's nick)
  value=LABEL:NUMBER   the number field LABEL holds NUMBER
  collapsed=NAME       the expander NAME is collapsed
  has=NAME             some widget (an image, a label...) is named NAME
  set=LABEL:NUMBER     sets the number field LABEL to NUMBER
  select=LABEL:TEXT    chooses the entry of drop-down LABEL that starts with TEXT
  shot=FILE            a PNG of the dialog (ImageMagick's import)
  press=NAME           presses the button NAME ("OK", "Cancel": then waits
                       for the dialog to close)
  preview              shows the preview: presses "Preview" unless it is
                       live, then waits for it to be computed
  dump                 prints the dialog's widget tree
"""
import subprocess
import sys
import time

import pyatspi

APP = "ddim-inversion"


def fail(text):
    print("CHECK FAILED: " + text, flush=True)
    sys.exit(1)


def children(acc):
    try:
        return [c for c in acc if c is not None]
    except Exception:
        return []


def walk(acc):
    yield acc
    for c in children(acc):
        yield from walk(c)


def find_dialog(timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for app in children(pyatspi.Registry.getDesktop(0)):
            if app.name != APP:
                continue
            for window in children(app):
                if window.getRoleName() == "dialog" and window.getState().contains(
                        pyatspi.STATE_SHOWING):
                    time.sleep(1.0)   # let it finish laying out
                    return window
        time.sleep(0.5)
    fail("no dialog of %s appeared within %d s" % (APP, timeout))


CONTROL_ROLES = ("combo box", "spin button", "text", "check box", "toggle button")


def control(dialog, label):
    """The control named LABEL, or the one beside the label LABEL."""
    for acc in walk(dialog):
        if acc.getRoleName() in CONTROL_ROLES and acc.name == label:
            return acc
    for acc in walk(dialog):
        if acc.getRoleName() == "label" and acc.name == label:
            parent = acc.parent
            for sibling in children(parent):
                if sibling.getRoleName() in CONTROL_ROLES:
                    return sibling
    fail("no control labelled %r" % label)


def items(combo):
    return [a for a in walk(combo) if a.getRoleName() == "menu item"]


def current_text(combo):
    """Our own drop-downs keep their entry in the description, GIMP's in
    the name."""
    return combo.description or combo.name


def dump(acc, depth=0):
    extra = ""
    try:
        extra = " value=%s" % acc.queryValue().currentValue
    except Exception:
        pass
    print("%s%s %r%s%s" % ("  " * depth, acc.getRoleName(), acc.name,
                           " (%s)" % acc.description if acc.description else "", extra))
    for c in children(acc):
        dump(c, depth + 1)


def split(arg):
    label, _, text = arg.partition(":")
    return label, text


def run_step(dialog, step):
    key, _, arg = step.partition("=")
    if key == "title":
        if dialog.name != arg:
            fail("the dialog is %r, not %r" % (dialog.name, arg))
    elif key == "has-item":
        label, text = split(arg)
        names = [i.name for i in items(control(dialog, label))]
        if not any(n.startswith(text) for n in names):
            fail("%s has no entry %r (it has %s)" % (label, text, names))
    elif key == "current":
        label, text = split(arg)
        shown = current_text(control(dialog, label))
        if not shown.startswith(text):
            fail("%s shows %r, not %r" % (label, shown, text))
    elif key == "value":
        label, text = split(arg)
        value = control(dialog, label).queryValue().currentValue
        if abs(value - float(text)) > 1e-9:
            fail("%s is %s, not %s" % (label, value, text))
    elif key == "set":
        label, text = split(arg)
        field = control(dialog, label).queryValue()
        field.currentValue = float(text)
        time.sleep(0.5)
        if abs(field.currentValue - float(text)) > 1e-9:
            fail("%s did not take %s (it holds %s)" % (label, text, field.currentValue))
    elif key == "has":
        if not any(acc.name == arg for acc in walk(dialog)):
            fail("nothing named %r" % arg)
    elif key == "collapsed":
        for acc in walk(dialog):
            if acc.getRoleName() == "toggle button" and acc.name == arg:
                if acc.getState().contains(pyatspi.STATE_EXPANDED) or acc.getState().contains(
                        pyatspi.STATE_CHECKED):
                    fail("%s is expanded" % arg)
                break
        else:
            fail("no expander %r" % arg)
    elif key == "select":
        label, text = split(arg)
        combo = control(dialog, label)
        names = [i.name for i in items(combo)]
        for index, name in enumerate(names):
            if name.startswith(text):
                combo.querySelection().selectChild(index)
                time.sleep(1.0)
                break
        else:
            fail("%s has no entry %r (it has %s)" % (label, text, names))
        # The dialog may be busy (a live preview computes after a change).
        shown_by = time.time() + 30
        shown = current_text(combo)
        while not shown.startswith(text) and time.time() < shown_by:
            time.sleep(0.5)
            shown = current_text(combo)
        if not shown.startswith(text):
            fail("choosing %r in %s shows %r" % (text, label, shown))
    elif key == "shot":
        box = dialog.queryComponent().getExtents(pyatspi.DESKTOP_COORDS)
        geometry = "%dx%d+%d+%d" % (box.width, box.height, max(box.x, 0), max(box.y, 0))
        subprocess.run(["import", "-window", "root", "-crop", geometry, "+repage", arg],
                       check=True)
        print("screenshot %s (%s)" % (arg, geometry))
    elif key == "press":
        for acc in walk(dialog):
            if acc.getRoleName() in ("push button", "button") and acc.name == arg:
                acc.queryAction().doAction(0)
                gone_by = time.time() + 30
                while time.time() < gone_by:
                    try:
                        if not dialog.getState().contains(pyatspi.STATE_SHOWING):
                            break
                    except Exception:
                        break
                    time.sleep(0.2)
                break
        else:
            fail("no button %r" % arg)
    elif key == "preview":
        def labels():
            return [a.name for a in walk(dialog) if a.getRoleName() == "label"]
        buttons = [a for a in walk(dialog) if a.getRoleName() in ("push button", "button")
                   and a.name == "Preview" and a.getState().contains(pyatspi.STATE_SHOWING)]
        if buttons:
            buttons[0].queryAction().doAction(0)
        ready_by = time.time() + 90
        while time.time() < ready_by:
            try:
                if any(n == "Preview" or n.startswith("Preview (") for n in labels()):
                    break
            except Exception:
                pass
            time.sleep(0.5)
        else:
            fail("the preview was not computed (labels: %s)" % labels())
    elif key == "dump":
        dump(dialog)
    else:
        fail("unknown step %r" % step)
    print("check ok: " + step, flush=True)


def main(argv):
    timeout = 240
    if len(argv) > 2 and argv[1] == "--timeout":
        timeout = int(argv[2])
        argv = argv[2:]
    steps = argv[1:]
    if not steps:
        print(__doc__)
        return 2
    dialog = find_dialog(timeout)
    for step in steps:
        run_step(dialog, step)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
