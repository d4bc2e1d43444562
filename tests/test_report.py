"""The report's Markdown rendering (report.html is self-contained, no raw Markdown left) and its
TensorBoard summary of the test metrics."""

import numpy as np

from jreid import report


def test_markdown_sections_render_to_html():
  text = ('Backbone `resnet50` (width 64), **SWA** on; a < b & c.\n\n'
          '| split | ids |\n|:--|--:|\n| `train` | 751 |\n\n'
          '- first `x`\n- second\n\n'
          '```\npython -m jreid.main --config=x\n```\n'
          'Last line.')
  assert report.markdown_to_html(text) == (
      '<p>Backbone <code>resnet50</code> (width 64), <strong>SWA</strong> on; a &lt; b &amp; '
      'c.</p>\n'
      '<table>\n<tr><th>split</th><th>ids</th></tr>\n'
      '<tr><td><code>train</code></td><td>751</td></tr>\n</table>\n'
      '<ul><li>first <code>x</code></li><li>second</li></ul>\n'
      '<pre><code>python -m jreid.main --config=x</code></pre>\n'
      '<p>Last line.</p>')
  assert report.markdown_inline('`<b>` and `c`') == '<code>&lt;b&gt;</code> and <code>c</code>'


def test_test_metrics_and_rank_lists_go_to_tensorboard(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.zeros((20, 30, 3), np.uint8)
  image[:, :10, 0] = 255
  Image.fromarray(image).save(tmp_path / 'rank_lists.png')
  report.write_test_summary(tmp_path, {'mAP': 0.5, 'rank1': 0.25, 'steps': 12,
                                       'wall_time_s': 3.0}, tmp_path / 'rank_lists.png')
  found = {}
  for events in (tmp_path / 'tensorboard').glob('events.out.tfevents.*'):
    for record in tf.data.TFRecordDataset(str(events)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        found[value.tag] = (event.step, value)
  assert sorted(found) == ['test/mAP', 'test/rank1', 'test/rank_lists']
  assert found['test/mAP'][0] == 12 and found['test/mAP'][1].simple_value == 0.5
  step, value = found['test/rank_lists']
  decoded = tf.io.decode_png(value.image.encoded_image_string).numpy()
  assert step == 12 and decoded.shape == (20, 30, 3)
  np.testing.assert_array_equal(decoded, image)
