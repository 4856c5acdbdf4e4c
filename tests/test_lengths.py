import pytest
import torch

from granite_asr.config import preset
from granite_asr.lengths import FrameGeometry


def test_jfk_clip_counts_match_spec():
    # SPEC §12: an 11.0 s clip → 550 encoder frames, 111 AR audio tokens, 110 NAR audio tokens.
    ar = FrameGeometry.from_config(preset("2b"))
    nar = FrameGeometry.from_config(preset("2b-nar"))
    assert ar.encoder_frames(176000) == 550
    assert nar.encoder_frames(176000) == 550
    assert ar.audio_tokens_for_samples(176000) == 111
    assert nar.audio_tokens_for_samples(176000) == 110


def test_ar_odd_mel_frame_dropped_and_nar_truncation():
    ar = FrameGeometry.from_config(preset("2b"))
    nar = FrameGeometry.from_config(preset("2b-nar"))
    # 16159 samples → 101 mel frames → 50 stacked (AR); NAR: 16159 // 320 = 50
    assert ar.mel_frames(16159) == 101 and ar.encoder_frames(16159) == 50
    assert nar.encoder_frames(16159) == 50
    # 16000 samples: 101 mel frames → AR 50, NAR 50; 16320: AR (103)//2=51, NAR 51
    assert ar.encoder_frames(16320) == 51 and nar.encoder_frames(16320) == 51
    assert nar.edit_slots(2) == 8 and nar.edit_slots(10) == 21


def test_tempo_stretches_the_mel_axis_before_stacking():
    """`tempo` τ: round(M·τ) mel frames, stacked as usual; ints and tensors agree; AR/Plus geometry only."""
    g = FrameGeometry.from_config(preset("tiny"))
    n = torch.tensor([16000, 12345, 400])
    for tempo in (1.0, 1.2, 1.5):
        frames = g.encoder_frames(n, tempo)
        assert frames.tolist() == [g.encoder_frames(int(x), tempo) for x in n]
        assert frames.tolist() == [round((int(x) // g.hop_length + 1) * tempo) // g.frames_stacked for x in n]
    assert g.frame_seconds(1.25) == pytest.approx(g.encoder_frame_seconds / 1.25)
    with pytest.raises(ValueError, match="tempo"):
        FrameGeometry.from_config(preset("tiny-nar")).encoder_frames(16000, 1.2)
