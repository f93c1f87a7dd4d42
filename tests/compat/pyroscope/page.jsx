// The page the checker loads: Pyroscope's own FlamegraphRenderer (table + flame graph), fed
// the profile by window.renderProfile. A "double" profile selects the component's diff mode.
import { createRoot } from 'react-dom/client';
import { FlamegraphRenderer } from '@pyroscope/flamegraph';
import '@pyroscope/flamegraph/dist/index.css';

window.renderProfile = (profile) => {
  createRoot(document.getElementById('root')).render(
    <FlamegraphRenderer profile={profile} onlyDisplay="both" showToolbar colorMode="light" />,
  );
};
