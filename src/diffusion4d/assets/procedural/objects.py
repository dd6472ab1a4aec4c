"""Procedural families of objects and plants: a robot arm, a spinning top, a door, a chest, a windmill, a
bouncing ball, a growing plant and a waving flag. Each family maps a random generator to a :class:`Built`."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from diffusion4d.assets.gltf_writer import Channel

from .rigging import (
    KEYS_PER_SECOND,
    Built,
    Motion,
    Scene,
    _a,
    _choose,
    _sideways_heading,
    _size,
    _size_word,
    cos_frequency,
    qmul,
    quat,
    sin_frequency,
    spin_rate,
    time_grid,
)
from .shapes import (
    _VIVID,
    Part,
    box,
    checker_texture,
    coloured,
    cone,
    cylinder,
    ellipsoid,
    lathe,
    linear,
    merge,
    pick_colours,
    plane_grid,
    planks_texture,
    rot,
    stripes_texture,
    transformed,
)


def _reach_curve(times: np.ndarray, freq: float) -> np.ndarray:
    """0 → 1 → 0 once per period, easing at both ends: how far through a reach / an opening the motion is."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * freq * times)


def robot_arm(rng: np.random.Generator) -> Built:
    """An articulated robot arm on a base (a node hierarchy animated by TRS): it reaches out to one side, pulls in
    and reaches again, or leans towards the viewer sweeping left and right; the gripper closes as it reaches."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-20, 20))
    arm_c, joint_c = pick_colours(rng, 2, ("orange", "yellow", "red", "blue", "green", "white", "teal", "purple"))
    plate_c = str(rng.choice(["grey", "black", "white"]))
    motion_kind = str(rng.choice(["left", "right", "sweep"]))
    l1, l2, w = rng.uniform(0.32, 0.42), rng.uniform(0.28, 0.38), rng.uniform(0.09, 0.12)
    freq = sin_frequency(rng) if motion_kind == "sweep" else cos_frequency(rng)
    reach = l1 + l2 + 0.12
    plate = 0.45 * reach

    scene = Scene(heading, scale)
    arm_m, joint_m, plate_m = scene.material(arm_c, roughness=0.5), scene.material(joint_c), scene.material(plate_c)
    scene.node(name="platform", mesh=scene.mesh([(box((2 * plate, 0.04, 2 * plate), (0, 0.02, 0)), plate_m),
                                                 (cylinder(0.1, 0.12, 20), joint_m)]),
               translation=(0, 0, 0))
    base_y = 0.04 + 0.12
    turret = scene.node(name="turret", translation=(0, base_y, 0),
                        mesh=scene.mesh([(cylinder(0.085, 0.06, 20), arm_m)]))
    shoulder = scene.node(turret, name="shoulder", translation=(0, 0.08, 0),
                          mesh=scene.mesh([(merge([transformed(ellipsoid((w * 0.9,) * 3, 14, 8)),
                                                   box((w, l1, w), (0, l1 / 2, 0))]), arm_m)]))
    elbow = scene.node(shoulder, name="elbow", translation=(0, l1, 0),
                       mesh=scene.mesh([(transformed(ellipsoid((w * 0.8,) * 3, 14, 8)), joint_m),
                                        (box((w * 0.8, l2, w * 0.8), (0, l2 / 2, 0)), arm_m)]))
    wrist = scene.node(elbow, name="wrist", translation=(0, l2, 0),
                       mesh=scene.mesh([(merge([transformed(ellipsoid((w * 0.6,) * 3, 12, 6)),
                                                box((0.14, 0.03, w * 0.8), (0, 0.03, 0))]), joint_m)]))
    finger_shape = box((0.02, 0.08, w * 0.7), (0, 0.085, 0))
    fingers = [scene.node(wrist, name=f"finger_{i}", translation=(sx * 0.05, 0, 0),
                          mesh=scene.mesh([(finger_shape, arm_m)])) for i, sx in enumerate((1, -1))]

    times = time_grid(1 / freq)
    motion = Motion(times)
    # Both motions start where the arm sticks out furthest, so the bounds at t = 0 already hold the whole motion.
    if motion_kind == "sweep":  # bent forward towards the viewer, turning left and right about its base
        yaw = rng.uniform(0.5, 0.7) * np.sin(2 * np.pi * freq * times)
        out = 0.5 + 0.5 * np.cos(4 * np.pi * freq * times)  # furthest out when facing the viewer
        sh, el, wr = 0.6 + 0.2 * out, 0.7 - 0.2 * out, 0.5 + 0 * out
    else:  # reaching out sideways, pulling back in towards upright, reaching out again
        yaw = np.full_like(times, math.pi / 2 if motion_kind == "right" else -math.pi / 2)
        out = 1 - _reach_curve(times, freq)
        sh, el, wr = 0.95 * out, 1.1 - 0.6 * out, 0.6 - 0.3 * out
    motion.rotations[0] = quat("y", yaw)
    motion.rotations[1], motion.rotations[2], motion.rotations[3] = quat("x", sh), quat("x", el), quat("x", wr)
    grip = 0.05 - 0.025 * out ** 2  # the gripper closes as the arm reaches out
    for i, sx in enumerate((1, -1)):
        motion.translations[4 + i] = np.stack([sx * grip, 0 * times, 0 * times], 1)
    scene.animate([turret, shoulder, elbow, wrist, *fingers], motion)

    attrs = {"size": size, "scale": scale,
             "color": arm_c, "joint_color": joint_c, "platform_color": plate_c, "motion": motion_kind,
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3)}
    arm = f"{_a(_size_word(attrs) + arm_c)} robot arm"
    if motion_kind == "sweep":
        caption = _choose(rng, [f"{arm} sweeps from side to side above {_a(plate_c)} base",
                                f"{arm} with {joint_c} joints swings left and right, opening and closing its gripper"])
    else:
        caption = _choose(rng, [f"{arm} reaches to the {motion_kind}",
                                f"{arm} on {_a(plate_c)} base reaches out to the {motion_kind}, pulls back and "
                                f"reaches again",
                                f"{arm} with {joint_c} joints reaches to the {motion_kind} and grips"])
    return Built(scene.finish(), attrs, caption)


def spinning_top(rng: np.random.Generator) -> Built:
    """A vertex-coloured spinning top that spins about its axis while the tilted axis precesses (node TRS)."""
    size, scale = _size(rng)
    c1, c2, c3 = pick_colours(rng, 3, _VIVID + ("white", "black"))
    radius, waist = rng.uniform(0.3, 0.42), rng.uniform(0.22, 0.35)
    handle = rng.uniform(0.15, 0.3)
    sectors = int(rng.choice([2, 3, 4]))
    spin = spin_rate(rng, sectors)
    precession = float(rng.uniform(0.8, 1.2))
    tilt = math.radians(rng.uniform(6, 10))

    profile_r = [0.0, 0.03, 0.6 * radius, radius, 0.95 * radius, 0.55 * radius, 0.05, 0.035, 0.035, 0.045, 0.0]
    profile_y = [0.0, 0.015, 0.55 * waist, waist, waist + 0.04, waist + 0.1, waist + 0.13, waist + 0.135,
                 waist + 0.13 + handle, waist + 0.14 + handle, waist + 0.15 + handle]
    body = lathe(profile_r, profile_y, segments=48, caps=False)
    phi = np.arctan2(body.positions[:, 0], body.positions[:, 2])
    stripe = (0.5 + 0.5 * np.tanh(8 * np.sin(sectors * phi)))[:, None]  # `sectors` pairs of coloured wedges
    band = np.abs(body.positions[:, 1] - waist) < 0.035
    colors = stripe * linear(c1) + (1 - stripe) * linear(c2)
    colors[band] = linear(c3)
    body = coloured(body, colors)

    scene = Scene(0.0, scale)
    wobble = scene.node(name="precession")
    spinner = scene.node(wobble, name="spin", mesh=scene.mesh([(body, scene.material(None, roughness=0.4))]))
    times = time_grid(1.0 / precession)
    motion = Motion(times)
    psi = 2 * np.pi * precession * times
    motion.rotations[0] = qmul(quat("y", psi), quat("x", np.full_like(times, tilt)))
    motion.rotations[1] = quat("y", 2 * np.pi * spin * times - psi)  # spin relative to the precessing frame
    scene.animate([wobble, spinner], motion)
    attrs = {"size": size, "scale": scale,
             "colors": [c1, c2], "band_color": c3, "sectors": sectors, "spin_rev_per_s": round(spin, 3),
             "precession_hz": round(precession, 3), "tilt_deg": round(math.degrees(tilt), 2)}
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + c1)} and {c2} spinning top spins and wobbles",
        f"a spinning top with {c1} and {c2} stripes and {_a(c3)} band twirls on its tip",
        f"{_a(_size_word(attrs) + 'striped')} top in {c1} and {c2} spins, its axis slowly circling",
    ])
    return Built(scene.finish(), attrs, caption)


def door_swing(rng: np.random.Generator) -> Built:
    """A textured plank door in its frame swinging open and shut about its hinges (node rotation)."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-25, 25))
    door_c, frame_c, knob_c = pick_colours(rng, 3, ("brown", "red", "green", "blue", "white", "yellow", "grey",
                                                    "teal", "black", "orange", "purple"))
    width, height = rng.uniform(0.45, 0.6), rng.uniform(0.95, 1.15)
    hinge_side = str(rng.choice(["left", "right"]))
    towards = bool(rng.random() < 0.5)
    freq, max_open = cos_frequency(rng), math.radians(rng.uniform(70, 100))
    thick, post = 0.04, 0.07

    scene = Scene(heading, scale)
    frame = merge([box((post, height + post, 0.1), (sx * (width / 2 + post / 2), (height + post) / 2, 0))
                   for sx in (1, -1)] + [box((width + 2 * post, post, 0.1), (0, height + post / 2, 0)),
                                         box((width + 2 * post, 0.02, 0.14), (0, 0.01, 0))])
    scene.node(name="frame", mesh=scene.mesh([(frame, scene.material(frame_c))]))
    sx = -1.0 if hinge_side == "left" else 1.0  # the hinge's x; the door extends from it to the other side
    texture = planks_texture(door_c, int(rng.integers(4, 7)), rng, vertical=True)
    panel = transformed(box((width - 0.01, height - 0.02, thick)), translate=(-sx * width / 2, height / 2, 0))
    knob = ellipsoid((0.03,) * 3, 10, 6)
    knobs = merge([transformed(knob, translate=(-sx * (width - 0.08), height * 0.48, sz * (thick / 2 + 0.03)))
                   for sz in (1, -1)])
    door_mesh = scene.mesh([(panel, scene.material(None, texture=texture)),
                            (knobs, scene.material(knob_c, metallic=0.6, roughness=0.3))])
    hinge = scene.node(name="door", translation=(sx * width / 2, 0.01, 0), mesh=door_mesh)
    times = time_grid(1 / freq)
    # rotating about +Y by +θ swings +X towards −Z: pick the sign that opens towards the viewer when asked
    direction = sx * (1.0 if towards else -1.0)
    motion = Motion(times, rotations={0: quat("y", direction * max_open * _reach_curve(times, freq))})
    scene.animate([hinge], motion)
    attrs = {"size": size, "scale": scale,
             "color": door_c, "frame_color": frame_c, "knob_color": knob_c, "hinge": hinge_side,
             "opens": "towards viewer" if towards else "away", "max_open_deg": round(math.degrees(max_open), 1),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3)}
    where = "towards us" if towards else "away from us"
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + door_c)} wooden door swings open {where} and closes again",
        f"{_a(door_c)} plank door in {_a(frame_c)} frame opens and shuts on its {hinge_side} hinges",
        f"{_a(_size_word(attrs) + door_c)} door with {_a(knob_c)} knob swings open {where}",
    ])
    return Built(scene.finish(), attrs, caption)


def chest_lid(rng: np.random.Generator) -> Built:
    """A chest, box or laptop whose lid swings closed, or part way, and open again about a hinge at the back (node
    rotation).

    It starts open: the open lid then spans the motion, so the asset stays inside its normalised bounds. How far the
    lid closes is drawn over a range, so the family's motion magnitude varies with its swing as well as its size and
    speed (a model asked for less motion can learn to swing the lid less).
    """
    size, scale = _size(rng)
    heading = float(rng.uniform(-40, 40))
    kind = str(rng.choice(["chest", "box", "laptop"]))
    freq = cos_frequency(rng)
    scene = Scene(heading, scale)
    if kind == "laptop":
        body_c = str(rng.choice(["grey", "black", "white", "blue", "pink"]))
        accent = "black" if body_c != "black" else "grey"
        width, depth, base_h, lid_t = rng.uniform(0.9, 1.1), rng.uniform(0.6, 0.7), 0.04, 0.025
        open_max, open_min = math.radians(rng.uniform(100, 115)), math.radians(rng.uniform(5, 60))
        body_m, lid_m = scene.material(body_c, metallic=0.5, roughness=0.35), scene.material(body_c, metallic=0.5,
                                                                                                roughness=0.35)
        base = [(box((width, base_h, depth), (0, base_h / 2, 0)), body_m),
                (box((width * 0.85, 0.004, depth * 0.45), (0, base_h + 0.002, 0.05 * depth)), scene.material(accent))]
        lid = [(box((width, lid_t, depth), (0, lid_t / 2, depth / 2)), lid_m),
               (box((width * 0.9, 0.004, depth * 0.85), (0, -0.002, depth / 2)), scene.material(accent))]
        texture_used = False
    else:
        body_c = str(rng.choice(["brown", "red", "blue", "green", "yellow", "purple", "teal", "orange"]))
        accent = str(rng.choice(["yellow", "black", "grey"] if body_c != "yellow" else ["black", "grey", "brown"]))
        width, depth = rng.uniform(0.8, 1.0), rng.uniform(0.45, 0.6)
        base_h, lid_t = rng.uniform(0.35, 0.5), rng.uniform(0.06, 0.1)
        open_max = math.radians(rng.uniform(95, 110))
        texture_used = kind == "chest"
        body_m = scene.material(None, texture=planks_texture(body_c, int(rng.integers(3, 6)), rng, vertical=False)) \
            if texture_used else scene.material(body_c)
        base = [(box((width, base_h, depth), (0, base_h / 2, 0)), body_m),
                (box((0.1, 0.12, 0.03), (0, base_h - 0.06, depth / 2 + 0.015)), scene.material(accent, metallic=0.6))]
        lid = [(box((width, lid_t, depth), (0, lid_t / 2, depth / 2)), body_m)]
    scene.node(name="base", mesh=scene.mesh(base), translation=(0, 0, 0))
    hinge = scene.node(name="lid", mesh=scene.mesh(lid), translation=(0, base_h, -depth / 2))
    if kind != "laptop":  # drawn after the looks, so a chest keeps the looks it had when its lid always shut
        open_min = math.radians(rng.uniform(0, 60))
    times = time_grid(1 / freq)
    opening = open_min + (open_max - open_min) * (1 - _reach_curve(times, freq))  # open → shut → open
    # rotating about +X by −θ lifts the lid's front edge (+Z) upwards
    scene.animate([hinge], Motion(times, rotations={0: quat("x", -opening)}))
    attrs = {"size": size, "scale": scale,
             "kind": kind, "color": body_c, "accent_color": accent, "textured": texture_used,
             "max_open_deg": round(math.degrees(open_max), 1), "min_open_deg": round(math.degrees(open_min), 1),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3)}
    thing = {"chest": "wooden treasure chest", "box": "box", "laptop": "laptop"}[kind]
    if open_min > math.radians(25):  # the lid stops well short of shut: say so
        options = [f"{_a(_size_word(attrs) + body_c)} {thing} lowers its lid part way and raises it again",
                   f"the lid of {_a(body_c)} {thing} swings half closed and then opens"]
    elif kind == "laptop":
        options = [f"{_a(_size_word(attrs) + body_c)} laptop folds its screen shut and opens it again",
                   f"{_a(body_c)} laptop closes and reopens its lid"]
    else:
        options = [f"{_a(_size_word(attrs) + body_c)} {thing} closes its lid and opens it again",
                   f"{_a(_size_word(attrs) + body_c)} {thing} whose lid flaps shut and open",
                   f"the lid of {_a(body_c)} {thing} swings closed and then opens"]
    caption = _choose(rng, options)
    return Built(scene.finish(), attrs, caption)


def windmill(rng: np.random.Generator) -> Built:
    """A windmill with broad sails or a slender wind turbine, its rotor spinning about the facing axis (node TRS)."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-30, 30))
    kind = str(rng.choice(["windmill", "wind turbine"]))
    scene = Scene(heading, scale)
    if kind == "windmill":
        blades = int(rng.choice([4, 5]))
        blade_c, tower_c = pick_colours(rng, 2, ("white", "red", "brown", "yellow", "blue", "grey", "green"))
        tower_h, r_base, r_top = rng.uniform(0.55, 0.75), rng.uniform(0.16, 0.2), rng.uniform(0.1, 0.13)
        blade_len, blade_w = rng.uniform(0.32, 0.42), rng.uniform(0.08, 0.12)
        tower = merge([cylinder(r_base, tower_h, 20, top_radius=r_top),
                       transformed(cone(r_top * 1.3, 0.15, 20), translate=(0, tower_h, 0))])
        hub_at = (0, tower_h + 0.02, r_top + 0.05)
    else:
        blades = 3
        blade_c = str(rng.choice(["white", "grey", "yellow", "blue", "red"]))
        tower_c = "white" if blade_c != "white" else "grey"
        tower_h, r_base, r_top = rng.uniform(0.8, 1.0), 0.035, 0.022
        blade_len, blade_w = rng.uniform(0.38, 0.48), rng.uniform(0.06, 0.08)
        tower = merge([cylinder(r_base, tower_h, 16, top_radius=r_top),
                       box((0.08, 0.07, 0.18), (0, tower_h + 0.03, 0))])
        hub_at = (0, tower_h + 0.03, 0.11)
    scene.node(name="tower", mesh=scene.mesh([(tower, scene.material(tower_c))]))
    sails = []
    for k in range(blades):
        a = 2 * np.pi * k / blades  # blade 0 points straight up at t = 0: the highest the rotor reaches
        taper = box((blade_w, blade_len, 0.015), (0, 0.04 + blade_len / 2, 0.0))
        sails.append(transformed(taper, linear_map=rot("z", a)))
    hub = transformed(ellipsoid((0.04, 0.04, 0.05), 12, 6))
    rotor = scene.node(name="rotor", translation=hub_at,
                       mesh=scene.mesh([(merge(sails), scene.material(blade_c)), (hub, scene.material(tower_c))]))
    rate = spin_rate(rng, blades) * float(rng.choice([-1.0, 1.0]))
    times = time_grid(1.0 / (abs(rate) * blades))  # the rotor looks the same after 1/blades of a turn
    scene.animate([rotor], Motion(times, rotations={0: quat("z", 2 * np.pi * rate * times)}))
    attrs = {"size": size, "scale": scale,
             "kind": kind, "color": blade_c, "tower_color": tower_c, "blades": blades,
             "rev_per_s": round(rate, 3), "heading_deg": round(heading, 2)}
    number = {3: "three", 4: "four", 5: "five"}[blades]
    parts = "sails" if kind == "windmill" else "blades"
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + blade_c)} {kind} spins its {number} {parts}",
        f"{_a(kind)} with {number} {blade_c} {parts} turning {'clockwise' if rate < 0 else 'counterclockwise'}",
        f"{_a(_size_word(attrs) + kind)} on {_a(tower_c)} tower, its {blade_c} {parts} rotating in the wind",
    ])
    return Built(scene.finish(), attrs, caption)


def _scaled_about_bottom(part: Part, sxz: float, sy: float) -> Part:
    """The part scaled by (sxz, sy, sxz) about the origin (its bottom point), for squash-and-stretch states."""
    return transformed(part, linear_map=np.diag([sxz, sy, sxz]))


def bouncing_ball(rng: np.random.Generator) -> Built:
    """A textured ball bouncing on a mat: its height follows exact parabolas through CUBICSPLINE keys (node
    translation) and it squashes on landing and stretches in flight through two morph targets."""
    size, scale = _size(rng)
    c1, c2 = pick_colours(rng, 2, _VIVID + ("white",))
    mat_c = str(rng.choice(["grey", "black", "brown", "white"] if c1 != "white" and c2 != "white" else
                           ["grey", "black", "brown"]))
    pattern = str(rng.choice(["striped", "checkered"]))
    radius = rng.uniform(0.22, 0.3)
    bounce = radius * rng.uniform(1.2, 2.0)  # apex height of the ball's bottom above the mat
    period = float(rng.uniform(0.6, 1.0))
    contact = 0.12 * period  # time on the mat per bounce, when it squashes
    squash = rng.uniform(0.25, 0.4)

    texture = stripes_texture([c1, c2], int(rng.choice([6, 8, 10])), vertical=True) if pattern == "striped" else \
        checker_texture([c1, c2], 8)
    ball = transformed(ellipsoid((radius,) * 3, 24, 14), translate=(0, radius, 0))
    squashed = _scaled_about_bottom(ball, 1 + 0.6 * squash, 1 - squash)
    stretched = _scaled_about_bottom(ball, 0.88, 1.2)

    scene = Scene(float(rng.uniform(-30, 30)), scale)
    pad = 2.8 * radius  # wider than the squashed ball
    scene.node(name="mat", mesh=scene.mesh([(box((pad, 0.03, pad), (0, 0.015, 0)), scene.material(mat_c))]))
    ball_node = scene.node(name="ball", translation=(0, 0.03 + bounce, 0),
                           mesh=scene.mesh([(ball, scene.material(None, texture=texture, roughness=0.4))],
                                           targets=[[squashed, stretched]]))

    # one bounce starting at the apex: fall for `flight`, sit for `contact`, rise for `flight`
    flight = (period - contact) / 2
    cycles = math.ceil(1.0 / period - 1e-9)
    key_t, key_v, key_in, key_out = [], [], [], []
    speed = 2 * bounce / flight  # landing speed of the parabola h·(1 − (τ/flight)²)
    for c in range(cycles):
        t0 = c * period
        for t, v, vin, vout in ((t0, bounce, 0.0, 0.0), (t0 + flight, 0.0, -speed, 0.0),
                                (t0 + flight + contact, 0.0, 0.0, speed)):
            key_t.append(t), key_v.append(v), key_in.append(vin), key_out.append(vout)
    key_t.append(cycles * period), key_v.append(bounce), key_in.append(0.0), key_out.append(0.0)
    base = 0.03
    values = np.zeros((len(key_t), 3, 3))
    values[:, 0, 1], values[:, 1, 1], values[:, 2, 1] = key_in, np.asarray(key_v) + base, key_out
    scene.channels.append(Channel(ball_node, "translation", np.asarray(key_t), values, "CUBICSPLINE"))

    times = time_grid(period)
    tau = np.mod(times, period) - flight  # time since landing
    on_mat = (tau >= 0) & (tau <= contact)
    squash_w = np.where(on_mat, np.sin(np.pi * np.clip(tau / contact, 0, 1)), 0.0)
    # stretch grows with speed, which peaks just before landing and just after take-off
    air = np.where(tau < 0, 1 + tau / flight, np.clip(1 - (tau - contact) / flight, 0, 1))
    stretch_w = np.where(on_mat, 0.0, air ** 2)
    scene.channels.append(Channel(ball_node, "weights", times, np.stack([squash_w, stretch_w], 1)))
    attrs = {"size": size, "scale": scale,
             "colors": [c1, c2], "pattern": pattern, "mat_color": mat_c, "bounce_period_s":
             round(period, 3), "bounce_height": round(bounce / (2 * radius), 3), "squash": round(squash, 3)}
    ball_words = f"{c1} and {c2} {pattern} ball"
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + ball_words)} bounces up and down, squashing when it lands",
        f"{_a(ball_words)} bouncing on {_a(mat_c)} mat",
        f"{_a(_size_word(attrs) + ball_words)} drops onto {_a(mat_c)} mat, squashes flat and springs back up",
    ])
    return Built(scene.finish(), attrs, caption)


def _leaf(length: float, width: float) -> Part:
    """A flat leaf/petal along +Z from its base at the origin, its face up (+Y)."""
    return transformed(ellipsoid((width / 2, 0.006, length / 2), 10, 6), translate=(0, 0, length / 2))


def _splayed(part: Part, azimuth: float, elevation: float, at) -> Part:
    """Turn a +Z-pointing part to rise at ``elevation`` from the horizontal, facing ``azimuth``, rooted at ``at``."""
    return transformed(part, linear_map=rot("y", azimuth) @ rot("x", -elevation), translate=at)


def growing_plant(rng: np.random.Generator) -> Built:
    """A potted plant that grows taller, unfurls its leaves and (often) opens a flower: morph targets.

    Two targets hold the half-grown and fully-grown shapes; the weights walk base → half → full, which keeps
    unfurling leaves on a near-circular path rather than the straight chord a single target would give.
    """
    size, scale = _size(rng)
    pot_c, flower_c = pick_colours(rng, 2, ("orange", "red", "blue", "white", "brown", "yellow", "purple", "pink",
                                            "teal", "grey"))
    leaf_c = str(rng.choice(["green", "green", "teal"]))
    stem_h, grow = rng.uniform(0.45, 0.6), rng.uniform(0.22, 0.32)
    leaves = int(rng.integers(4, 8))
    leaf_len, leaf_w = rng.uniform(0.36, 0.46), rng.uniform(0.11, 0.15)
    has_flower = bool(rng.random() < 0.6)
    petals = int(rng.integers(5, 9))
    duration = float(rng.uniform(0.8, 1.0))
    pot_h, pot_r = rng.uniform(0.16, 0.22), rng.uniform(0.12, 0.16)
    golden = math.radians(137.5)
    heights = np.linspace(0.3, 0.85, leaves)

    def plant(g: float) -> tuple[Part, Part, Part]:
        """Stem + leaves, petals and flower centre at growth g ∈ [0, 1] (same topology for every g)."""
        h = stem_h * (1 + grow * g)
        stem = cylinder(0.018, 1.0, 10, rings=6, top_radius=0.012)
        parts = [transformed(stem, linear_map=np.diag([1.0, h, 1.0]), translate=(0, pot_h, 0))]
        for i, f in enumerate(heights):
            fold = math.radians(80 - 65 * g)  # from nearly upright along the stem to spread almost flat
            s = 0.55 + 0.45 * g  # leaves grow as they unfurl
            parts.append(_splayed(_leaf(leaf_len * s, leaf_w * s), i * golden, fold, (0, pot_h + f * h, 0)))
        top = np.array([0, pot_h + h, 0])
        petal = [_splayed(_leaf(0.13 * (0.5 + 0.5 * g), 0.06 * (0.6 + 0.4 * g)), 2 * np.pi * k / petals,
                          math.radians(80 - 70 * g), top) for k in range(petals)]
        centre = transformed(ellipsoid((0.03, 0.02, 0.03), 10, 6), linear_map=np.eye(3) * (0.6 + 0.4 * g),
                             translate=top)
        return merge(parts), merge(petal), centre

    states = [plant(g) for g in (0.0, 0.5, 1.0)]
    scene = Scene(0.0, scale)
    pot = merge([cylinder(pot_r * 0.75, pot_h, 20, top_radius=pot_r),
                 transformed(cylinder(pot_r * 1.08, 0.03, 20), translate=(0, pot_h - 0.03, 0))])
    soil = transformed(cylinder(pot_r * 0.95, 0.01, 20), translate=(0, pot_h - 0.02, 0))
    scene.node(name="pot", mesh=scene.mesh([(pot, scene.material(pot_c)), (soil, scene.material("brown",
                                                                                                roughness=1.0))]))
    pieces = [(states[0][0], scene.material(leaf_c))]
    targets = [[states[1][0], states[2][0]]]
    if has_flower:
        pieces += [(states[0][1], scene.material(flower_c)), (states[0][2], scene.material("yellow" if flower_c !=
                                                                                              "yellow" else "orange"))]
        targets += [[states[1][1], states[2][1]], [states[1][2], states[2][2]]]
    node = scene.node(name="plant", mesh=scene.mesh(pieces, targets))
    times = np.linspace(0.0, max(1.0, duration), KEYS_PER_SECOND + 1)
    s = np.sin(np.pi / 2 * np.clip(times / duration, 0, 1))  # fast at first, easing into the full-grown pose
    w_half = np.where(s < 0.5, 2 * s, 2 - 2 * s)
    w_full = np.where(s < 0.5, 0.0, 2 * s - 1)
    scene.channels.append(Channel(node, "weights", times, np.stack([w_half, w_full], 1)))
    attrs = {"size": size, "scale": scale,
             "pot_color": pot_c, "leaf_color": leaf_c, "leaves": leaves,
             "flower_color": flower_c if has_flower else None, "growth": round(grow, 3),
             "duration_s": round(duration, 3)}
    shape = "tall " if stem_h > 0.53 else ""
    plant_words = f"{_size_word(attrs) or shape}{leaf_c} plant"
    caption = _choose(rng, [
        f"{_a(plant_words)} in {_a(pot_c)} pot grows and unfurls its leaves",
        f"{_a(plant_words)} sprouts upward, spreading {leaves} leaves",
    ])
    if has_flower:
        caption += _choose(rng, [f" as {_a(flower_c)} flower blooms", f" and opens {_a(flower_c)} flower"])
    return Built(scene.finish(), attrs, caption)


def flag_wave(rng: np.random.Generator) -> Built:
    """A striped (textured) flag rippling on a pole: a travelling wave built exactly from two morph targets,
    a(x)·sin(kx) and a(x)·cos(kx), weighted by cos(ωt) and −sin(ωt); a third target lifts the free end, so the
    flutter also shows in the flag's own plane."""
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 40, 65)
    colours = pick_colours(rng, int(rng.choice([2, 3])), _VIVID + ("white", "black"))
    bands = len(colours) * int(rng.choice([1, 2]))
    vertical = bool(rng.random() < 0.5)
    pole_h, width, height = rng.uniform(0.85, 1.05), rng.uniform(0.6, 0.8), rng.uniform(0.38, 0.5)
    waves, amp = rng.uniform(1.0, 1.6), rng.uniform(0.16, 0.22) * width
    freq = float(rng.uniform(1.0, 1.5))
    pole_c = str(rng.choice(["grey", "white", "brown", "black"]))

    cloth = transformed(plane_grid(width, height, 24, 6), translate=(0.02, pole_h - height - 0.03, 0))
    x = (cloth.positions[:, 0] - 0.02) / width
    k = 2 * np.pi * waves
    envelope = amp * x ** 1.2  # pinned at the pole, free at the fly end
    d_env = amp * 1.2 * np.maximum(x, 1e-6) ** 0.2 / width
    z_sin, z_cos = envelope * np.sin(k * x), envelope * np.cos(k * x)
    # surface z = f(x): its normal is (−f′, 0, 1); the normal change is linear in f, so it morphs exactly too
    dz_sin = d_env * np.sin(k * x) + envelope * np.cos(k * x) * k / width
    dz_cos = d_env * np.cos(k * x) - envelope * np.sin(k * x) * k / width

    def state(z: np.ndarray, dz: np.ndarray, y=0.0) -> Part:
        return replace(cloth, positions=cloth.positions + np.c_[0 * z, 0 * z + y, z],
                       normals=cloth.normals + np.c_[-dz, 0 * dz, 0 * dz])

    lift = 0.4 * height * x ** 1.5

    texture = stripes_texture(colours, bands, vertical=vertical)
    scene = Scene(heading, scale)
    pole = merge([cylinder(0.018, pole_h, 12), transformed(ellipsoid((0.035,) * 3, 10, 6), translate=(0, pole_h, 0))])
    scene.node(name="pole", mesh=scene.mesh([(pole, scene.material(pole_c, metallic=0.4))]))
    flag = scene.node(name="flag", mesh=scene.mesh([(cloth, scene.material(None, texture=texture,
                                                                          double_sided=True))],
                                                   targets=[[state(z_sin, dz_sin), state(z_cos, dz_cos),
                                                             state(0 * x, 0 * x, lift)]]))
    times = time_grid(1 / freq)
    omega = 2 * np.pi * freq * times
    scene.channels.append(Channel(flag, "weights", times, np.stack([np.cos(omega), -np.sin(omega),
                                                                       0.5 * np.sin(omega + 0.8)], 1)))
    attrs = {"size": size, "scale": scale,
             "colors": colours, "stripes": "vertical" if vertical else "horizontal", "bands": bands,
             "pole_color": pole_c, "frequency_hz": round(freq, 3), "heading_deg": round(heading, 2)}
    names = " and ".join([", ".join(colours[:-1]), colours[-1]])
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + 'flag')} with {names} {attrs['stripes']} stripes waves on {_a(pole_c)} pole",
        f"{_a(names)} striped flag ripples in the wind",
        f"a flag striped {names} flutters on a pole",
    ])
    return Built(scene.finish(), attrs, caption)
